"""Radial basis, smooth cutoff envelope and the radial MLP."""
from __future__ import annotations

import torch


class GaussianRadialBasis(torch.nn.Module):
    """Gaussians centred on ``num_basis`` points evenly spaced over [0, cutoff] (Angstrom).

    Width as in EquiformerV2: ``coeff = -0.5 / (basis_width_scalar * spacing)**2``.
    Shape: distances [E] -> [E, num_basis].
    """

    def __init__(self, cutoff: float, num_basis: int, basis_width_scalar: float = 2.0) -> None:
        super().__init__()
        offset = torch.linspace(0.0, cutoff, num_basis, dtype=torch.float64)
        spacing = float(offset[1] - offset[0]) if num_basis > 1 else cutoff
        self.coeff = -0.5 / (basis_width_scalar * spacing) ** 2
        self.register_buffer("offset", offset, persistent=False)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        diff = dist[:, None] - self.offset.to(dist.dtype)[None, :]
        return torch.exp(self.coeff * diff**2)


class PolynomialEnvelope(torch.nn.Module):
    """Smooth polynomial cutoff ``u(d)``, d = r / cutoff: 1 at 0, and u, u', u'' vanish at d = 1.

    ``u(d) = 1 - (p+1)(p+2)/2 d^p + p(p+2) d^(p+1) - p(p+1)/2 d^(p+2)`` for d < 1, else 0.
    Shape: distances [E] (Angstrom) -> [E].
    """

    def __init__(self, cutoff: float, exponent: int = 5) -> None:
        super().__init__()
        self.cutoff, self.p = float(cutoff), int(exponent)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        p = self.p
        d = dist / self.cutoff
        u = 1 - (p + 1) * (p + 2) / 2 * d**p + p * (p + 2) * d ** (p + 1) - p * (p + 1) / 2 * d ** (p + 2)
        return torch.where(d < 1, u, torch.zeros_like(u))


class RadialMLP(torch.nn.Module):
    """MLP over edge scalars: (Linear, LayerNorm, SiLU) per hidden layer, then Linear.

    ``channels`` = [in, hidden..., out]; shape [E, in] -> [E, out].
    """

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for i in range(len(channels) - 1):
            layers.append(torch.nn.Linear(channels[i], channels[i + 1]))
            if i < len(channels) - 2:
                layers += [torch.nn.LayerNorm(channels[i + 1]), torch.nn.SiLU()]
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
