"""Dropout variants whose masks can be held fixed across DEQ solver iterations.

A DEQ evaluates its layer many times per forward; the fixed point is only defined if every
evaluation sees the same random masks. With ``recurrent = True`` a module draws its mask once
(on first use after ``reset()``) and reuses it until the next ``reset()``.
"""
from __future__ import annotations

import torch


class RecurrentDropout(torch.nn.Module):
    """Base class: Bernoulli keep-mask of a given shape, optionally frozen between resets."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.recurrent = False
        self._mask: torch.Tensor | None = None

    def reset(self) -> None:
        self._mask = None

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    def mask(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Scaled keep-mask (values 0 or 1/(1-p)) with ``shape``."""
        if self.recurrent and self._mask is not None and tuple(self._mask.shape) == tuple(shape):
            return self._mask
        keep = 1.0 - self.p
        m = torch.empty(shape, dtype=like.dtype, device=like.device).bernoulli_(keep) / keep
        if self.recurrent:
            self._mask = m
        return m

    def extra_repr(self) -> str:
        return f"p={self.p}"


class GraphDropPath(RecurrentDropout):
    """Stochastic depth per graph: a whole structure's residual branch is dropped.

    Shapes: x [N, K, C], batch [N] -> [N, K, C].
    """

    def forward(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
        if not self.active:
            return x
        return x * self.mask((num_graphs,), x)[batch].view(-1, 1, 1)


class EquivariantDropout(RecurrentDropout):
    """Drops whole channels of a node (same mask for every coefficient): [N, K, C] -> [N, K, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return x * self.mask((x.shape[0], 1, x.shape[2]), x)


class AttentionDropout(RecurrentDropout):
    """Plain dropout of attention weights [E, H]."""

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return alpha
        return alpha * self.mask(tuple(alpha.shape), alpha)
