"""Per-structure edge quantities computed once per forward and shared by every block."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..so3.rotation import EdgeRotation


@dataclass
class EdgeContext:
    """Everything a block needs besides node features.

    edge_index: [2, E] (source j, target i); messages flow j -> i.
    rotation: per-edge Wigner matrices (edge frame).
    rbf: [E, num_radial_basis] radial basis of edge lengths.
    envelope: [E] smooth cutoff weights, or None when the envelope is off.
    atomic_numbers: [N]; batch: [N] graph of each atom; num_graphs: B.
    """

    edge_index: torch.Tensor
    rotation: EdgeRotation
    rbf: torch.Tensor
    envelope: torch.Tensor | None
    atomic_numbers: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    @property
    def num_nodes(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def source(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def target(self) -> torch.Tensor:
        return self.edge_index[1]
