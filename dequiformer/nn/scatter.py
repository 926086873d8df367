"""Torch-native scatter helpers (no torch-scatter)."""
from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``src`` [E, ...] into ``size`` buckets given by ``index`` [E]."""
    out = src.new_zeros((size,) + src.shape[1:])
    return out.index_add(0, index, src)


def segment_softmax(logits: torch.Tensor, index: torch.Tensor, size: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax of ``logits`` [E, H] over the edges sharing a target ``index`` [E].

    With ``weight`` [E] (a smooth cutoff envelope in [0, 1]) every term is weighted:
    ``a_e = w_e exp(l_e) / sum_k w_k exp(l_k)``, so an edge entering at the cutoff (w = 0)
    does not change the others' weights discontinuously.
    """
    shape = (size,) + logits.shape[1:]
    max_per = logits.new_full(shape, float("-inf")).scatter_reduce(
        0, index.view(-1, *([1] * (logits.dim() - 1))).expand_as(logits), logits, reduce="amax", include_self=True
    )
    exp = torch.exp(logits - max_per.detach()[index])
    if weight is not None:
        exp = exp * weight.view(-1, *([1] * (logits.dim() - 1)))
    denom = scatter_sum(exp, index, size)
    return exp / (denom[index] + torch.finfo(logits.dtype).tiny)
