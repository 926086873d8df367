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

    def detached(self) -> "EdgeContext":
        """The same context cut from the autograd graph of the positions (a layer evaluated on it
        differentiates in its own parameters only)."""
        return EdgeContext(
            edge_index=self.edge_index, rotation=self.rotation.detached(), rbf=self.rbf.detach(),
            envelope=None if self.envelope is None else self.envelope.detach(),
            atomic_numbers=self.atomic_numbers, batch=self.batch, num_graphs=self.num_graphs,
        )

    def subset(self, node_mask: torch.Tensor) -> "EdgeContext":
        """The context of the atoms in ``node_mask`` [N] bool, which must hold whole graphs
        (edges never cross graphs, so every kept edge has both ends kept). Graph ids stay as
        they are, so per-graph reductions still use ``num_graphs`` slots."""
        edge_mask = node_mask[self.edge_index[1]]
        new_id = torch.cumsum(node_mask.long(), 0) - 1
        return EdgeContext(
            edge_index=new_id[self.edge_index[:, edge_mask]],
            rotation=self.rotation.subset(edge_mask),
            rbf=self.rbf[edge_mask],
            envelope=None if self.envelope is None else self.envelope[edge_mask],
            atomic_numbers=self.atomic_numbers[node_mask],
            batch=self.batch[node_mask],
            num_graphs=self.num_graphs,
        )

    @property
    def source(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def target(self) -> torch.Tensor:
        return self.edge_index[1]
