"""Explicit EquiformerV2: ``num_layers`` transformer blocks applied in sequence."""
from __future__ import annotations

from typing import Any

import torch

from ..deq.stats import SolverStats
from ..nn.context import EdgeContext
from .base import ForceFieldModel
from .blocks import TransformerBlock


class EquiformerV2(ForceFieldModel):
    """The explicit baseline. ``out["solver"]["steps"]`` reports the number of block
    evaluations (``num_layers``) so explicit and implicit models can be compared directly."""

    def __init__(self, model_cfg: dict) -> None:
        super().__init__({**model_cfg, "name": "equiformer_v2"})
        self.blocks = torch.nn.ModuleList(TransformerBlock(self.hparams) for _ in range(self.hparams["num_layers"]))

    def trunk(self, x: torch.Tensor, ctx: EdgeContext, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        if kwargs.get("z0") is not None:
            raise ValueError("the explicit EquiformerV2 has no fixed point to warm-start (z0 given)")
        for block in self.blocks:
            x = block(x, ctx)
        n = len(self.blocks)
        steps = torch.full((ctx.num_graphs,), n, dtype=torch.long, device=x.device)
        stats = SolverStats(
            steps=steps, residual=x.new_zeros(ctx.num_graphs),
            converged=torch.ones(ctx.num_graphs, dtype=torch.bool, device=x.device), nfe=n,
        )
        return x, {"solver": stats}
