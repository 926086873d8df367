"""Exponential moving average of model parameters (evaluation and checkpoint weights)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


class ExponentialMovingAverage:
    """Shadow copy ``s <- decay * s + (1 - decay) * p`` of every trainable parameter.

    Buffers are not averaged: the model's own buffers (e.g. output scaling) are used as they are.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the current parameters into the average (call after each optimizer step)."""
        self.num_updates += 1
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Overwrite the model's parameters with the averages."""
        params = dict(model.named_parameters())
        for name, value in self.shadow.items():
            params[name].copy_(value)

    @contextlib.contextmanager
    def average_parameters(self, model: torch.nn.Module) -> Iterator[None]:
        """Temporarily swap the averaged weights into ``model`` (restored on exit)."""
        params = dict(model.named_parameters())
        backup = {name: params[name].detach().clone() for name in self.shadow}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates,
                "shadow": {k: v.detach().clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.shadow) - set(state["shadow"]))
        if missing:
            raise KeyError(f"EMA state lacks parameter(s) {missing[:5]}")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name in self.shadow:
            self.shadow[name].copy_(state["shadow"][name])
