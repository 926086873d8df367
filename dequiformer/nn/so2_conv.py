"""SO(2) convolution in the edge frame (eSCN / EquiformerV2)."""
from __future__ import annotations

import math

import torch

from ..so3.layout import CoefficientLayout
from .radial import RadialMLP


class SO2Convolution(torch.nn.Module):
    """Linear map of edge-frame features that commutes with rotations about the edge axis.

    The m = 0 block (``lmax+1`` degrees x ``in_channels``) goes through one dense layer with a
    bias and ``extra_m0_channels`` additional scalar outputs. Each m > 0 block is a pair
    (+m, -m) treated as the real and imaginary part of one complex vector and multiplied by a
    complex weight, which is what makes the map SO(2)-equivariant.

    With ``edge_channels`` (internal radial weights off) a RadialMLP maps the edge scalars to
    per-edge multiplicative weights on the input of every m block; the +m and -m halves share
    them.

    Shapes: x [E, R, in_channels] (m-major, reduced), edge_scalars [E, edge_channels[0]] ->
    ([E, R, out_channels], [E, extra_m0_channels] or None).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: CoefficientLayout,
        edge_channels: list[int] | None = None,
        extra_m0_channels: int = 0,
    ) -> None:
        super().__init__()
        self.layout, self.in_channels, self.out_channels = layout, in_channels, out_channels
        self.extra_m0_channels = extra_m0_channels
        sizes = layout.m_sizes
        self.fc_m0 = torch.nn.Linear(sizes[0] * in_channels, sizes[0] * out_channels + extra_m0_channels)
        self.fc_m = torch.nn.ModuleList()
        for size in sizes[1:]:
            fc = torch.nn.Linear(size * in_channels, 2 * size * out_channels, bias=False)
            with torch.no_grad():
                fc.weight.mul_(1.0 / math.sqrt(2.0))
            self.fc_m.append(fc)
        self.rad = None
        if edge_channels is not None:
            self.rad = RadialMLP(list(edge_channels) + [sum(sizes) * in_channels])

    def forward(self, x: torch.Tensor, edge_scalars: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        e = x.shape[0]
        sizes = self.layout.m_sizes
        rad = self.rad(edge_scalars) if self.rad is not None else None
        c_in, c_out = self.in_channels, self.out_channels

        x0 = x[:, : sizes[0]].reshape(e, sizes[0] * c_in)  # explicit width: E may be 0
        offset_rad = sizes[0] * c_in
        if rad is not None:
            x0 = x0 * rad[:, :offset_rad]
        y0 = self.fc_m0(x0)
        extra = y0[:, : self.extra_m0_channels] if self.extra_m0_channels else None
        outs = [y0[:, self.extra_m0_channels:].reshape(e, sizes[0], c_out)]

        offset = sizes[0]
        for m, fc in enumerate(self.fc_m, start=1):
            size = sizes[m]
            xm = x[:, offset: offset + 2 * size].reshape(e, 2, size * c_in)
            if rad is not None:
                xm = xm * rad[:, None, offset_rad: offset_rad + size * c_in]
                offset_rad += size * c_in
            ym = fc(xm)  # [E, 2, 2*size*c_out]: (W_r x, W_i x) for x = (real, imag)
            w_r, w_i = ym[..., : size * c_out], ym[..., size * c_out:]
            real = w_r[:, 0] - w_i[:, 1]
            imag = w_r[:, 1] + w_i[:, 0]
            outs.append(real.reshape(e, size, c_out))
            outs.append(imag.reshape(e, size, c_out))
            offset += 2 * size
        return torch.cat(outs, dim=1), extra
