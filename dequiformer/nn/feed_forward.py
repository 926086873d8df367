"""Equivariant feed-forward network (EquiformerV2)."""
from __future__ import annotations

import torch

from ..so3.grid import S2Grid
from ..so3.layout import CoefficientLayout
from ..so3.linear import SO3LinearV2
from .activations import GateActivation, SeparableS2Activation, S2Activation


class FeedForwardNetwork(torch.nn.Module):
    """SO3 linear -> activation -> SO3 linear on node features.

    Activation, in EquiformerV2's order of precedence: a grid MLP (``use_grid_mlp``: a
    pointwise MLP over channels at every grid point, l = 0 output from a separate scalar MLP
    when ``use_sep_s2_act``); else a gate (``use_gate_act``); else a separable S2 or an S2
    activation. Scalars for the gate / separable activation come from the l = 0 input.

    Shapes: [N, K, in_channels] -> [N, K, out_channels].
    """

    def __init__(
        self,
        *,
        in_channels: int,
        hidden_channels: int,
        out_channels: int,
        lmax: int,
        grid_resolution: int | None = None,
        use_gate_act: bool = False,
        use_grid_mlp: bool = False,
        use_sep_s2_act: bool = True,
    ) -> None:
        super().__init__()
        self.use_gate_act, self.use_grid_mlp, self.use_sep_s2_act = use_gate_act, use_grid_mlp, use_sep_s2_act
        self.lmax = lmax
        self.linear_1 = SO3LinearV2(in_channels, hidden_channels, lmax)
        self.scalar_mlp = None
        self.gating_linear = None
        self.act: torch.nn.Module | None = None
        grid = None if (use_gate_act and not use_grid_mlp) else S2Grid(lmax, lmax, grid_resolution, order="l")
        if use_grid_mlp:
            self.grid = grid
            if use_sep_s2_act:
                self.scalar_mlp = torch.nn.Sequential(torch.nn.Linear(in_channels, hidden_channels), torch.nn.SiLU())
            self.grid_mlp = torch.nn.Sequential(
                torch.nn.Linear(hidden_channels, hidden_channels, bias=False), torch.nn.SiLU(),
                torch.nn.Linear(hidden_channels, hidden_channels, bias=False), torch.nn.SiLU(),
                torch.nn.Linear(hidden_channels, hidden_channels, bias=False),
            )
        elif use_gate_act:
            self.gating_linear = torch.nn.Linear(in_channels, lmax * hidden_channels)
            self.act = GateActivation(CoefficientLayout(lmax).l_of, hidden_channels)
        elif use_sep_s2_act:
            self.gating_linear = torch.nn.Linear(in_channels, hidden_channels)
            self.act = SeparableS2Activation(grid)
        else:
            self.act = S2Activation(grid)
        self.linear_2 = SO3LinearV2(hidden_channels, out_channels, lmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scalars = x[:, 0]
        h = self.linear_1(x)
        if self.use_grid_mlp:
            h = self.grid.from_grid(self.grid_mlp(self.grid.to_grid(h)))
            if self.scalar_mlp is not None:
                h = torch.cat([self.scalar_mlp(scalars).unsqueeze(1), h[:, 1:]], dim=1)
        elif self.gating_linear is not None:
            h = self.act(self.gating_linear(scalars), h)
        else:
            h = self.act(h)
        return self.linear_2(h)
