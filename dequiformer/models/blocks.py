"""EquiformerV2 transformer block."""
from __future__ import annotations

import torch

from ..nn.attention import SO2EquivariantGraphAttention
from ..nn.context import EdgeContext
from ..nn.dropout import EquivariantDropout, GraphDropPath
from ..nn.feed_forward import FeedForwardNetwork
from ..nn.norms import build_norm
from ..profiling import stage
from .encoder import edge_channels_list


class TransformerBlock(torch.nn.Module):
    """Residual attention + feed-forward sublayers.

    ``norm_placement="pre"``: ``x + drop(sub(norm(x)))`` (EquiformerV2).
    ``norm_placement="pre_post"``: ``x + drop(norm'(sub(norm(x))))`` (norms before and after each
    sublayer, which keeps the implicit layer's output bounded for the DEQ).
    Shapes: x [N, K, C] -> [N, K, C].
    """

    def __init__(self, hp: dict) -> None:
        super().__init__()
        c, lmax = hp["sphere_channels"], hp["lmax"]
        self.pre_post = hp["norm_placement"] == "pre_post"
        self.norm_1 = build_norm(hp["norm_type"], lmax, c)
        self.attention = SO2EquivariantGraphAttention(
            sphere_channels=c, hidden_channels=hp["attn_hidden_channels"], num_heads=hp["num_heads"],
            alpha_channels=hp["attn_alpha_channels"], value_channels=hp["attn_value_channels"], output_channels=c,
            lmax=lmax, mmax=hp["mmax"], max_num_elements=hp["max_num_elements"],
            edge_channels=edge_channels_list(hp), grid_resolution=hp["grid_resolution"],
            use_atom_edge_embedding=hp["use_atom_edge_embedding"], use_gate_act=hp["use_gate_act"],
            use_sep_s2_act=hp["use_sep_s2_act"], alpha_drop=hp["alpha_drop"],
            aggregation=hp["attn_aggregation"], avg_degree=float(hp["avg_degree"] or 1.0),
        )
        self.norm_2 = build_norm(hp["norm_type"], lmax, c)
        self.ffn = FeedForwardNetwork(
            in_channels=c, hidden_channels=hp["ffn_hidden_channels"], out_channels=c, lmax=lmax,
            grid_resolution=hp["grid_resolution"], use_gate_act=hp["use_gate_act"], use_grid_mlp=hp["use_grid_mlp"],
            use_sep_s2_act=hp["use_sep_s2_act"],
        )
        if self.pre_post:
            self.post_norm_1 = build_norm(hp["norm_type"], lmax, c)
            self.post_norm_2 = build_norm(hp["norm_type"], lmax, c)
        self.path_drop_1 = GraphDropPath(hp["path_drop"])
        self.path_drop_2 = GraphDropPath(hp["path_drop"])
        self.proj_drop_1 = EquivariantDropout(hp["proj_drop"])
        self.proj_drop_2 = EquivariantDropout(hp["proj_drop"])

    def forward(self, x: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        with stage("block"):
            h = self.attention(self.norm_1(x), ctx)
            if self.pre_post:
                h = self.post_norm_1(h)
            x = x + self.proj_drop_1(self.path_drop_1(h, ctx.batch, ctx.num_graphs))
            h = self.ffn(self.norm_2(x))
            if self.pre_post:
                h = self.post_norm_2(h)
            return x + self.proj_drop_2(self.path_drop_2(h, ctx.batch, ctx.num_graphs))
