"""Learning-rate schedule: linear warmup, then cosine decay, stepped once per optimizer step."""
from __future__ import annotations

import math
from typing import Any

import torch


def cosine_warmup_lr(step: int, total_steps: int, warmup_steps: int, lr: float, warmup_lr: float,
                     min_lr: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear from ``warmup_lr`` at step 0 to ``lr`` at ``warmup_steps``, then half a cosine from
    ``lr`` down to ``min_lr`` at ``total_steps``; constant ``min_lr`` beyond.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_steps_from(train_cfg: dict, steps_per_epoch: int) -> int:
    """Warmup length in steps: ``warmup_fraction * total`` when set, else ``warmup_epochs`` epochs."""
    total = int(train_cfg["epochs"]) * steps_per_epoch
    if train_cfg.get("warmup_fraction") is not None:
        return int(round(float(train_cfg["warmup_fraction"]) * total))
    return int(round(float(train_cfg.get("warmup_epochs") or 0.0) * steps_per_epoch))


class CosineWarmupSchedule:
    """Sets every parameter group's ``lr`` from :func:`cosine_warmup_lr`.

    The schedule's only state is the step counter, so a resumed run continues it exactly
    (``state_dict`` / ``load_state_dict``). Call :meth:`step` after each optimizer step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, lr: float,
                 warmup_lr: float, min_lr: float) -> None:
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.lr, self.warmup_lr, self.min_lr = float(lr), float(warmup_lr), float(min_lr)
        self.last_step = 0
        self._apply()

    def current_lr(self) -> float:
        """Learning rate that the next optimizer step will use."""
        return cosine_warmup_lr(self.last_step, self.total_steps, self.warmup_steps, self.lr, self.warmup_lr,
                                self.min_lr)

    def _apply(self) -> None:
        value = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def step(self) -> None:
        """Advance one optimizer step."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "lr": self.lr, "warmup_lr": self.warmup_lr, "min_lr": self.min_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter (the shape of the schedule comes from the config)."""
        self.last_step = int(state["last_step"])
        self._apply()
