"""Equivariant nonlinearities: gate, S2 grid and separable S2 activations; smooth leaky ReLU."""
from __future__ import annotations

import torch

from ..so3.grid import S2Grid


class SmoothLeakyReLU(torch.nn.Module):
    """``(1+a)/2 x + (1-a)/2 x (2 sigmoid(x) - 1)``: a smooth leaky ReLU with slope a at -inf."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.alpha = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha
        return (1 + a) / 2 * x + (1 - a) / 2 * x * (2 * torch.sigmoid(x) - 1)


class GateActivation(torch.nn.Module):
    """SiLU on the l = 0 coefficient; every l > 0 coefficient scaled by sigmoid(gate_l).

    Args:
        degrees: [K] degree of each coefficient in the order the features use (l- or m-major);
            coefficient 0 must be the l = 0 one.
        channels: C.
    Shapes: gates [M, lmax*C], x [M, K, C] -> [M, K, C].
    """

    def __init__(self, degrees: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.lmax = int(degrees.max())
        self.register_buffer("gate_index", (degrees[1:] - 1).clone(), persistent=False)

    def forward(self, gates: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(gates).view(x.shape[0], self.lmax, self.channels)
        g = g.index_select(1, self.gate_index)
        return torch.cat([torch.nn.functional.silu(x[:, :1]), x[:, 1:] * g], dim=1)


class S2Activation(torch.nn.Module):
    """SiLU applied pointwise to the function on the sphere: from_grid(silu(to_grid(x)))."""

    def __init__(self, grid: S2Grid) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid.apply_pointwise(torch.nn.functional.silu, x)


class SeparableS2Activation(torch.nn.Module):
    """S2 activation for l > 0; the l = 0 output is SiLU of separately computed scalars.

    Shapes: scalars [M, C], x [M, K, C] -> [M, K, C].
    """

    def __init__(self, grid: S2Grid) -> None:
        super().__init__()
        self.s2 = S2Activation(grid)

    def forward(self, scalars: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.s2(x)
        return torch.cat([torch.nn.functional.silu(scalars).unsqueeze(1), out[:, 1:]], dim=1)
