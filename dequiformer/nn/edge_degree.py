"""Edge-degree embedding: initial l > 0 node features from the neighbour distribution."""
from __future__ import annotations

import torch

from ..so3.layout import CoefficientLayout
from .atom_edge_embedding import add_atom_edge_embeddings, atom_edge_scalars
from .context import EdgeContext
from .radial import RadialMLP
from .scatter import scatter_sum


class EdgeDegreeEmbedding(torch.nn.Module):
    """Per edge, a radial MLP gives m = 0 coefficients (all degrees) in the edge frame; they are
    rotated back to the global frame, summed on the target atom and divided by ``avg_degree``.

    Shapes: -> [N, (lmax+1)^2, sphere_channels].
    """

    def __init__(
        self,
        *,
        sphere_channels: int,
        lmax: int,
        mmax: int,
        max_num_elements: int,
        edge_channels: list[int],
        use_atom_edge_embedding: bool = True,
        avg_degree: float = 1.0,
    ) -> None:
        super().__init__()
        self.layout = CoefficientLayout(lmax, mmax)
        self.sphere_channels, self.avg_degree = sphere_channels, float(avg_degree)
        edge_channels = list(edge_channels)
        self.use_atom_edge_embedding = use_atom_edge_embedding
        if use_atom_edge_embedding:
            edge_channels[0] += add_atom_edge_embeddings(self, max_num_elements, edge_channels[-1])
        self.rad = RadialMLP(edge_channels + [(lmax + 1) * sphere_channels])

    def forward(self, ctx: EdgeContext) -> torch.Tensor:
        tgt = ctx.target
        scalars = atom_edge_scalars(self, ctx) if self.use_atom_edge_embedding else ctx.rbf
        m0 = self.rad(scalars).view(-1, self.layout.lmax + 1, self.sphere_channels)
        if ctx.envelope is not None:
            m0 = m0 * ctx.envelope[:, None, None]
        pad = m0.new_zeros(m0.shape[0], self.layout.num_reduced - m0.shape[1], self.sphere_channels)
        msg = ctx.rotation.rotate_inv(torch.cat([m0, pad], dim=1))
        return scatter_sum(msg, tgt, ctx.num_nodes) / self.avg_degree
