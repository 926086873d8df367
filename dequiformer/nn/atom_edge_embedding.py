"""Atom-edge embedding: per-edge scalars from the radial basis and both atoms' species."""
from __future__ import annotations

import torch

from .context import EdgeContext


def add_atom_edge_embeddings(module: torch.nn.Module, max_num_elements: int, channels: int) -> int:
    """Give ``module`` a ``source_embedding`` and a ``target_embedding`` (``[max_num_elements,
    channels]``, near-zero initialisation as in EquiformerV2) and return the channels they add
    to the edge scalars (``2 * channels``). The attribute names are the checkpoints' keys."""
    module.source_embedding = torch.nn.Embedding(max_num_elements, channels)
    module.target_embedding = torch.nn.Embedding(max_num_elements, channels)
    torch.nn.init.uniform_(module.source_embedding.weight, -0.001, 0.001)
    torch.nn.init.uniform_(module.target_embedding.weight, -0.001, 0.001)
    return 2 * channels


def atom_edge_scalars(module: torch.nn.Module, ctx: EdgeContext) -> torch.Tensor:
    """``[E, R + 2 C]``: the radial basis of each edge j -> i with the source (Z_j) and target
    (Z_i) embeddings of ``module`` (see :func:`add_atom_edge_embeddings`)."""
    z = ctx.atomic_numbers
    return torch.cat([ctx.rbf, module.source_embedding(z[ctx.source]), module.target_embedding(z[ctx.target])], dim=1)
