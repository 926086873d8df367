"""Encoder: edge context (frames, Wigner blocks, radial basis) and initial node features."""
from __future__ import annotations

import torch

from ..data.graph import AtomicGraph
from ..nn.context import EdgeContext
from ..nn.edge_degree import EdgeDegreeEmbedding
from ..nn.radial import GaussianRadialBasis, PolynomialEnvelope
from ..so3.layout import CoefficientLayout
from ..so3.rotation import EdgeRotation


class Encoder(torch.nn.Module):
    """Atom embedding (l = 0) plus edge-degree embedding (all l).

    ``context(graph)`` computes per-edge quantities once per structure; ``forward(ctx)``
    returns the input injection x [N, (lmax+1)^2, sphere_channels].
    """

    def __init__(self, hp: dict) -> None:
        super().__init__()
        self.layout = CoefficientLayout(hp["lmax"], hp["mmax"])
        self.sphere_channels = hp["sphere_channels"]
        self.sphere_embedding = torch.nn.Embedding(hp["max_num_elements"], hp["sphere_channels"])
        self.rbf = GaussianRadialBasis(float(hp["cutoff"]), hp["num_radial_basis"], hp["basis_width_scalar"])
        self.envelope = PolynomialEnvelope(float(hp["cutoff"]), hp["envelope_exponent"]) if hp["use_envelope"] else None
        self.edge_degree = EdgeDegreeEmbedding(
            sphere_channels=hp["sphere_channels"], lmax=hp["lmax"], mmax=hp["mmax"],
            max_num_elements=hp["max_num_elements"], edge_channels=edge_channels_list(hp),
            use_atom_edge_embedding=hp["use_atom_edge_embedding"], avg_degree=hp["avg_degree"],
        )

    def context(self, graph: AtomicGraph) -> EdgeContext:
        vec = graph.edge_vectors()
        dist = vec.norm(dim=-1)
        return EdgeContext(
            edge_index=graph.edge_index,
            rotation=EdgeRotation(vec, self.layout),
            rbf=self.rbf(dist),
            envelope=self.envelope(dist) if self.envelope is not None else None,
            atomic_numbers=graph.atomic_numbers,
            batch=graph.batch,
            num_graphs=graph.num_graphs,
        )

    def forward(self, ctx: EdgeContext) -> torch.Tensor:
        emb = self.sphere_embedding(ctx.atomic_numbers)
        x = emb.new_zeros(emb.shape[0], self.layout.num_coefficients, self.sphere_channels)
        x = torch.cat([emb.unsqueeze(1), x[:, 1:]], dim=1)
        return x + self.edge_degree(ctx)


def edge_channels_list(hp: dict) -> list[int]:
    """Radial MLP widths: [num_radial_basis, edge_channels, edge_channels]."""
    return [hp["num_radial_basis"], hp["edge_channels"], hp["edge_channels"]]
