"""Solver registry: name -> solver function with the uniform signature
``solver(f, z0, graph_index=None, num_graphs=None, tol=..., max_iter=..., **kwargs) -> (z_star, SolverStats)``."""
from __future__ import annotations

from typing import Callable

from .anderson import anderson
from .broyden import broyden
from .forward import forward_iteration

__all__ = ["SOLVERS", "get_solver"]

SOLVERS: dict[str, Callable] = {
    "anderson": anderson,
    "broyden": broyden,
    "forward": forward_iteration,
}


def get_solver(name: str) -> Callable:
    """Solver function by name: ``"anderson"``, ``"broyden"`` or ``"forward"``.

    Raises:
        ValueError: for any other name (the message lists the valid ones).
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}") from None
