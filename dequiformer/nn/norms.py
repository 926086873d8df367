"""Equivariant normalisation of [N, (lmax+1)^2, C] features (EquiformerV2's three variants)."""
from __future__ import annotations

import torch

from ..so3.layout import CoefficientLayout


class _DegreeNorm(torch.nn.Module):
    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.channels, self.eps = lmax, channels, eps
        self.affine_weight = torch.nn.Parameter(torch.ones(lmax + 1, channels))
        self.affine_bias = torch.nn.Parameter(torch.zeros(channels))
        layout = CoefficientLayout(lmax)
        self.register_buffer("expand_index", layout.l_of.clone(), persistent=False)
        # weight of each coefficient so that every degree counts equally: 1/((2l+1) * n_degrees)
        counts = (2 * layout.l_of + 1).to(torch.float64)
        self.register_buffer("balance", 1.0 / counts, persistent=False)

    def extra_repr(self) -> str:
        return f"lmax={self.lmax}, channels={self.channels}, eps={self.eps}"


class EquivariantLayerNorm(_DegreeNorm):
    """``layer_norm``: each degree normalised on its own (l = 0 centred), affine per degree."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for l in range(self.lmax + 1):
            f = x[:, l * l: (l + 1) ** 2]
            if l == 0:
                f = f - f.mean(dim=2, keepdim=True)
            norm = f.pow(2).mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            f = f * (norm + self.eps).rsqrt() * self.affine_weight[l]
            if l == 0:
                f = f + self.affine_bias
            outs.append(f)
        return torch.cat(outs, dim=1)


class EquivariantLayerNormSH(_DegreeNorm):
    """``layer_norm_sh``: LayerNorm on l = 0; all l > 0 normalised together, degrees balanced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = x[:, :1]
        f0 = f0 - f0.mean(dim=2, keepdim=True)
        n0 = f0.pow(2).mean(dim=2, keepdim=True)
        out0 = f0 * (n0 + self.eps).rsqrt() * self.affine_weight[0] + self.affine_bias
        if self.lmax == 0:
            return out0
        rest = x[:, 1:]
        w = self.balance[1:].to(x.dtype) / self.lmax
        norm = torch.einsum("nkc,k->nc", rest.pow(2), w).mean(dim=1)[:, None, None]
        weight = self.affine_weight.index_select(0, self.expand_index[1:])
        return torch.cat([out0, rest * (norm + self.eps).rsqrt() * weight], dim=1)


class EquivariantRMSNormSH(_DegreeNorm):
    """``rms_norm_sh`` (EquiformerV2 default): l = 0 centred, one RMS over all degrees (balanced)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = x[:, :1] - x[:, :1].mean(dim=2, keepdim=True)
        f = torch.cat([f0, x[:, 1:]], dim=1)
        w = self.balance.to(x.dtype) / (self.lmax + 1)
        norm = torch.einsum("nkc,k->nc", f.pow(2), w).mean(dim=1)[:, None, None]
        weight = self.affine_weight.index_select(0, self.expand_index)
        out = f * (norm + self.eps).rsqrt() * weight
        return torch.cat([out[:, :1] + self.affine_bias, out[:, 1:]], dim=1)


NORMS = {"layer_norm": EquivariantLayerNorm, "layer_norm_sh": EquivariantLayerNormSH, "rms_norm_sh": EquivariantRMSNormSH}


def build_norm(norm_type: str, lmax: int, channels: int) -> torch.nn.Module:
    """Build an equivariant norm by name (``layer_norm``, ``layer_norm_sh``, ``rms_norm_sh``)."""
    if norm_type not in NORMS:
        raise ValueError(f"unknown norm_type {norm_type!r}; choose from {sorted(NORMS)}")
    return NORMS[norm_type](lmax, channels)
