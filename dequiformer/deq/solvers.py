"""Solver registry: name -> solver function with the uniform signature
``solver(f, z0, graph_index=None, num_graphs=None, tol=..., max_iter=..., **kwargs) -> (z_star, SolverStats)``."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..schema import Option, defaults, resolve_section

from .anderson import anderson
from .broyden import broyden
from .forward import forward_iteration

__all__ = ["SOLVERS", "SOLVER_OPTIONS", "SOLVER_SCHEMAS", "get_solver", "solver_options"]

SOLVERS: dict[str, Callable] = {
    "anderson": anderson,
    "broyden": broyden,
    "forward": forward_iteration,
}

#: each solver's own options: Anderson's window, mixing and (relative) regularisation, Broyden's
#: memory, forward iteration's damping. Every DEQ (force field and conv classifier) reads them
#: through :func:`solver_options`.
SOLVER_SCHEMAS: dict[str, dict[str, Option]] = {
    "anderson": {"m": Option(5, int, low=1), "beta": Option(1.0, float, low=0, low_open=True),
                 "lam": Option(1e-4, float, low=0)},
    "broyden": {"memory": Option(20, int, low=1)},
    "forward": {"damping": Option(0.0, float, low=0, high=1, high_open=True)},
}
#: their defaults
SOLVER_OPTIONS: dict[str, dict[str, int | float]] = {name: defaults(schema) for name, schema in SOLVER_SCHEMAS.items()}


def solver_options(solver: str, given: Mapping[str, Any] | None = None, where: str = "deq") -> dict[str, int | float]:
    """``solver``'s options: the defaults of :data:`SOLVER_OPTIONS` updated by ``given``, checked
    (unknown keys, types and ranges are errors naming ``where.solver.key``)."""
    get_solver(solver)
    return resolve_section(f"{where}.{solver}", given, SOLVER_SCHEMAS[solver])


def get_solver(name: str) -> Callable:
    """Solver function by name: ``"anderson"``, ``"broyden"`` or ``"forward"``.

    Raises:
        ValueError: for any other name (the message lists the valid ones).
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}") from None
