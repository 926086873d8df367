"""SO(2) equivariant graph attention (EquiformerV2)."""
from __future__ import annotations

import torch

from ..so3.grid import S2Grid
from ..so3.layout import CoefficientLayout
from ..so3.linear import SO3LinearV2
from .activations import GateActivation, SeparableS2Activation, S2Activation, SmoothLeakyReLU
from .atom_edge_embedding import add_atom_edge_embeddings, atom_edge_scalars
from .context import EdgeContext
from .dropout import AttentionDropout
from .scatter import scatter_sum, segment_softmax
from .so2_conv import SO2Convolution


class SO2EquivariantGraphAttention(torch.nn.Module):
    """Multi-head attention over each atom's incoming edges, computed in the edge frames.

    Per edge j -> i: edge scalars = [radial basis, emb_src(Z_j), emb_tgt(Z_i)]; message =
    [x_j, x_i] rotated into the edge frame (|m| <= mmax); SO(2) conv 1 (radial weights, extra
    m = 0 outputs for attention logits and activation scalars); gate / separable S2 / S2
    activation; SO(2) conv 2 to ``num_heads * value_channels``. Logits: LayerNorm, smooth
    leaky ReLU, dot with a per-head vector, softmax over the incoming edges of i (weighted by
    the cutoff envelope when present), dropout; or, with ``aggregation="sum"``, a sigmoid gate
    per head divided by ``avg_degree``. Weighted messages are rotated back, summed on i and
    projected by an SO(3) linear layer.

    Shapes: x [N, K, C] -> [N, K, output_channels].
    """

    def __init__(
        self,
        *,
        sphere_channels: int,
        hidden_channels: int,
        num_heads: int,
        alpha_channels: int,
        value_channels: int,
        output_channels: int,
        lmax: int,
        mmax: int,
        max_num_elements: int,
        edge_channels: list[int],
        grid_resolution: int | None = None,
        use_atom_edge_embedding: bool = True,
        use_gate_act: bool = False,
        use_sep_s2_act: bool = True,
        alpha_drop: float = 0.0,
        aggregation: str = "softmax",
        avg_degree: float = 1.0,
    ) -> None:
        super().__init__()
        if aggregation not in ("softmax", "sum"):
            raise ValueError(f"attention aggregation must be 'softmax' or 'sum', got {aggregation!r}")
        self.aggregation, self.avg_degree = aggregation, float(avg_degree)
        self.layout = CoefficientLayout(lmax, mmax)
        self.num_heads, self.alpha_channels, self.value_channels = num_heads, alpha_channels, value_channels
        self.hidden_channels, self.lmax = hidden_channels, lmax
        self.use_gate_act, self.use_sep_s2_act = use_gate_act, use_sep_s2_act

        edge_channels = list(edge_channels)
        self.use_atom_edge_embedding = use_atom_edge_embedding
        if use_atom_edge_embedding:
            edge_channels[0] += add_atom_edge_embeddings(self, max_num_elements, edge_channels[-1])

        extra = num_heads * alpha_channels
        if use_gate_act:
            extra += lmax * hidden_channels
        elif use_sep_s2_act:
            extra += hidden_channels
        self.conv1 = SO2Convolution(2 * sphere_channels, hidden_channels, self.layout, edge_channels, extra)
        degrees = self.layout.l_of[self.layout.m_major_index]
        if use_gate_act:
            self.act = GateActivation(degrees, hidden_channels)
        else:
            grid = S2Grid(lmax, mmax, grid_resolution, order="m")
            self.act = SeparableS2Activation(grid) if use_sep_s2_act else S2Activation(grid)
        self.conv2 = SO2Convolution(hidden_channels, num_heads * value_channels, self.layout)

        self.alpha_norm = torch.nn.LayerNorm(alpha_channels)
        self.alpha_act = SmoothLeakyReLU(0.2)
        self.alpha_dot = torch.nn.Parameter(torch.empty(num_heads, alpha_channels))
        torch.nn.init.uniform_(self.alpha_dot, -1.0 / alpha_channels**0.5, 1.0 / alpha_channels**0.5)
        self.alpha_dropout = AttentionDropout(alpha_drop)
        self.proj = SO3LinearV2(num_heads * value_channels, output_channels, lmax)

    def forward(self, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        src, tgt = ctx.source, ctx.target
        edge_scalars = atom_edge_scalars(self, ctx) if self.use_atom_edge_embedding else ctx.rbf
        msg = torch.cat([x[src], x[tgt]], dim=2)
        msg = ctx.rotation.rotate(msg)
        msg, extra = self.conv1(msg, edge_scalars)
        n_alpha = self.num_heads * self.alpha_channels
        logits_in, act_scalars = extra[:, :n_alpha], extra[:, n_alpha:]
        msg = self.act(act_scalars, msg) if (self.use_gate_act or self.use_sep_s2_act) else self.act(msg)
        msg, _ = self.conv2(msg)

        a = self.alpha_act(self.alpha_norm(logits_in.view(-1, self.num_heads, self.alpha_channels)))
        logits = torch.einsum("eha,ha->eh", a, self.alpha_dot.to(a.dtype))
        if self.aggregation == "sum":
            # gates in (0, 1), summed over the incoming edges and divided by the mean count; the
            # envelope takes each edge's weight to 0 at the cutoff
            alpha = self.alpha_dropout(torch.sigmoid(logits)) / self.avg_degree
        else:
            # The envelope enters twice, on purpose. Inside the softmax it keeps the other edges'
            # weights continuous when an edge crosses the cutoff; but an atom whose only neighbour
            # is at the cutoff would still get weight w exp / (w exp) = 1 from it, a jump from
            # nothing to a full message. The second factor takes that weight to 0 at the cutoff.
            alpha = self.alpha_dropout(segment_softmax(logits, tgt, ctx.num_nodes, ctx.envelope))
        if ctx.envelope is not None:
            alpha = alpha * ctx.envelope[:, None]

        e = msg.shape[0]
        msg = msg.view(e, msg.shape[1], self.num_heads, self.value_channels) * alpha[:, None, :, None]
        msg = ctx.rotation.rotate_inv(msg.view(e, msg.shape[1], self.num_heads * self.value_channels))
        out = scatter_sum(msg, tgt, ctx.num_nodes)
        return self.proj(out)
