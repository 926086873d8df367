"""Energy derivatives: the leaves that forces and stress are gradients with respect to.

Conservative forces are ``-dE/dpos``; the stress is the strain derivative
``sigma = (1/V) dE/d(epsilon)`` at ``epsilon = 0`` (ASE's sign convention: positive is
tensile, i.e. the structure wants to shrink), where the strain moves both the positions and the
lattice vectors, ``r -> r (I + eps)`` and ``cell -> cell (I + eps)``, with ``eps`` symmetrised
so the stress is symmetric. Only the model's energy is differentiated, so any model that maps
a graph to an energy gets both.
"""
from __future__ import annotations

import dataclasses

import torch

from ..data.graph import AtomicGraph


@dataclasses.dataclass
class Displacement:
    """A graph whose geometry is a differentiable function of fresh leaves.

    Attributes:
        graph: the displaced graph (same values as the original; positions and cell carry
            the leaves' graph).
        pos: ``[N, 3]`` leaf, Angstrom (a detached copy of the original positions).
        strain: ``[B, 3, 3]`` leaf at zero (dimensionless), or ``None`` without stress.
    """

    graph: AtomicGraph
    pos: torch.Tensor
    strain: torch.Tensor | None

    def leaves(self) -> list[torch.Tensor]:
        return [self.pos] if self.strain is None else [self.pos, self.strain]


def check_periodic(graph: AtomicGraph) -> None:
    """Stress needs a 3D-periodic cell with a volume; name the first structure that has none."""
    periodic = graph.pbc.to(torch.bool).all(dim=1)
    volume = torch.linalg.det(graph.cell.to(torch.float64)).abs()
    bad = torch.nonzero(~periodic | (volume <= 1e-12)).flatten()
    if bad.numel():
        b = int(bad[0])
        raise ValueError(
            f"structure {b}: stress needs a cell periodic in all three directions with a non-zero volume "
            f"(pbc={graph.pbc[b].tolist()}, volume={float(volume[b]):.4g} A^3)"
        )


def displace(graph: AtomicGraph, stress: bool = False) -> Displacement:
    """Fresh position (and, with ``stress``, strain) leaves for ``graph``; call in grad mode."""
    pos = graph.pos.detach().clone().requires_grad_(True)
    if not stress:
        return Displacement(dataclasses.replace(graph, pos=pos), pos, None)
    check_periodic(graph)
    strain = torch.zeros(graph.num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
    sym = 0.5 * (strain + strain.transpose(1, 2))
    moved = pos + torch.einsum("ni,nij->nj", pos, sym[graph.batch])
    cell = graph.cell.detach() + torch.bmm(graph.cell.detach(), sym)
    return Displacement(dataclasses.replace(graph, pos=moved, cell=cell), pos, strain)


def stress_from_strain_gradient(grad_strain: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` stress ``(1/V) dE/d(eps)`` (energy units / A^3) from the strain gradient."""
    volume = torch.linalg.det(cell.detach().to(grad_strain.dtype)).abs()
    return grad_strain / volume.view(-1, 1, 1)
