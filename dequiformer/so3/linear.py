"""SO(3)-equivariant linear map with one weight matrix per degree."""
from __future__ import annotations

import math

import torch

from .layout import CoefficientLayout


class SO3LinearV2(torch.nn.Module):
    """``y[l, m] = W_l x[l, m]`` with a bias on the l = 0 coefficient only.

    Shapes: [N, (lmax+1)^2, in_features] -> [N, (lmax+1)^2, out_features].
    """

    def __init__(self, in_features: int, out_features: int, lmax: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.lmax = in_features, out_features, lmax
        bound = 1.0 / math.sqrt(in_features)
        self.weight = torch.nn.Parameter(torch.empty(lmax + 1, out_features, in_features).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("expand_index", CoefficientLayout(lmax).l_of.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.index_select(0, self.expand_index)  # [K, out, in]
        out = torch.einsum("nki,koi->nko", x, weight)
        if self.bias is not None:
            out = torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)
        return out

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lmax={self.lmax}"
