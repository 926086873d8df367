"""Learning-rate schedule: linear warmup, then cosine decay, stepped once per optimizer step.

The decay runs over the run's optimizer steps (``train.lr_schedule: epochs``) or over its wall
budget (``lr_schedule: seconds``: cosine from the end of the warmup to ``train.max_seconds``), so
that a run cut by a wall budget still ends at ``min_lr`` instead of somewhere on the way down.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def _cosine(progress: float, lr: float, min_lr: float) -> float:
    """Half a cosine from ``lr`` at ``progress`` 0 down to ``min_lr`` at 1 (clamped to [0, 1])."""
    progress = min(max(progress, 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def cosine_warmup_lr(step: int, total_steps: int, warmup_steps: int, lr: float, warmup_lr: float,
                     min_lr: float) -> float:
    """Learning rate at optimizer step ``step`` (0-based).

    Linear from ``warmup_lr`` at step 0 to ``lr`` at ``warmup_steps``, then half a cosine from
    ``lr`` down to ``min_lr`` at ``total_steps``; constant ``min_lr`` beyond.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_lr + (lr - warmup_lr) * step / warmup_steps
    return _cosine((step - warmup_steps) / max(total_steps - warmup_steps, 1), lr, min_lr)


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
                 warmup_lr: float, min_lr: float, budget_seconds: float | None = None) -> None:
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.lr, self.warmup_lr, self.min_lr = float(lr), float(warmup_lr), float(min_lr)
        # wall-clock decay: the cosine runs from ``decay_start`` (seconds at the end of the
        # warmup) to ``budget_seconds``; ``seconds`` is the run's elapsed time at the last step
        self.budget_seconds = None if budget_seconds is None else float(budget_seconds)
        self.seconds = 0.0
        self.decay_start: float | None = 0.0 if self.warmup_steps == 0 else None
        self.last_step = 0
        self._apply()

    def current_lr(self) -> float:
        """Learning rate that the next optimizer step will use."""
        if self.budget_seconds is None or self.last_step < self.warmup_steps:
            return cosine_warmup_lr(self.last_step, self.total_steps, self.warmup_steps, self.lr, self.warmup_lr,
                                    self.min_lr)
        start = self.seconds if self.decay_start is None else self.decay_start
        return _cosine((self.seconds - start) / max(self.budget_seconds - start, 1e-9), self.lr, self.min_lr)

    def progress(self) -> float:
        """Fraction of the run done, in [0, 1]: elapsed over ``budget_seconds`` under the wall-clock
        decay, optimizer steps over ``total_steps`` otherwise (what ``train.stage_two.start`` means)."""
        if self.budget_seconds is not None:
            return min(self.seconds / max(self.budget_seconds, 1e-9), 1.0)
        return min(self.last_step / max(self.total_steps, 1), 1.0)

    def _apply(self) -> None:
        value = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = value

    def step(self, seconds: float | None = None) -> None:
        """Advance one optimizer step; ``seconds``: the run's elapsed wall time after it (needed
        for the wall-clock decay, ignored otherwise)."""
        self.last_step += 1
        if seconds is not None:
            self.seconds = float(seconds)
        if self.decay_start is None and self.last_step >= self.warmup_steps:
            self.decay_start = self.seconds
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "lr": self.lr, "warmup_lr": self.warmup_lr, "min_lr": self.min_lr,
                "budget_seconds": self.budget_seconds, "seconds": self.seconds, "decay_start": self.decay_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter and clock (the shape of the schedule comes from the config)."""
        self.last_step = int(state["last_step"])
        self.seconds = float(state.get("seconds", 0.0))
        if "decay_start" in state:
            self.decay_start = state["decay_start"]
        self._apply()
