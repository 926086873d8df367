"""Per-graph reductions over the rows of a batched state.

A solver state ``z`` is a tensor ``[N, D]`` (the solvers flatten ``[N, *feat]``)
whose rows belong to graphs: ``graph_index[n]`` is the graph of row ``n``.
Every inner product, norm and "all rows" test the solvers need is taken per graph,
so each graph is its own fixed-point problem.  Only torch-native scatter
(``index_add_``) is used.
"""
from __future__ import annotations

import torch

__all__ = [
    "resolve_graph_index",
    "graph_sum",
    "graph_dot",
    "graph_norm",
    "graph_any",
    "rows",
]


def resolve_graph_index(
    graph_index: torch.Tensor | None,
    num_rows: int,
    num_graphs: int | None,
    device: torch.device,
) -> tuple[torch.Tensor, int]:
    """Normalise the row-to-graph assignment.

    Args:
        graph_index: ``[N]`` integer graph id of each row (``0..B-1``), or ``None``
            for "every row is its own problem" (``graph_index = arange(N)``).
        num_rows: ``N``.
        num_graphs: ``B``; inferred as ``graph_index.max() + 1`` when ``None``.
        device: device of the state.

    Returns:
        ``(graph_index [N] long on device, B)``.
    """
    if graph_index is None:
        index = torch.arange(num_rows, device=device)
        if num_graphs is not None and num_graphs != num_rows:
            raise ValueError(
                f"graph_index=None means one problem per row, but num_graphs={num_graphs} != {num_rows} rows"
            )
        return index, num_rows
    index = torch.as_tensor(graph_index, device=device).long().reshape(-1)
    if index.numel() != num_rows:
        raise ValueError(f"graph_index has {index.numel()} entries but the state has {num_rows} rows")
    if num_graphs is None:
        num_graphs = int(index.max().item()) + 1 if num_rows > 0 else 0
    return index, int(num_graphs)


def graph_sum(values: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Sum rows per graph: ``[N, *rest] -> [B, *rest]``."""
    out = values.new_zeros((num_graphs,) + tuple(values.shape[1:]))
    return out.index_add_(0, graph_index, values)


def graph_dot(a: torch.Tensor, b: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-graph inner product of two ``[N, D]`` states: ``[B]``."""
    return graph_sum((a * b).sum(dim=1), graph_index, num_graphs)


def graph_norm(a: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-graph Euclidean norm of an ``[N, D]`` state: ``[B]``."""
    return graph_dot(a, a, graph_index, num_graphs).sqrt()


def graph_any(mask: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """``[N]`` bool -> ``[B]`` bool: does any row of the graph have the flag."""
    counts = torch.zeros(num_graphs, dtype=torch.long, device=mask.device)
    return counts.index_add_(0, graph_index, mask.long()) > 0


def rows(per_graph: torch.Tensor, graph_index: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-graph tensor ``[B, *rest]`` to the rows: ``[N, *rest]``."""
    return per_graph.index_select(0, graph_index)
