"""Solver registry: name -> solver function with the uniform signature
``solver(f, z0, graph_index=None, num_graphs=None, tol=..., max_iter=..., **kwargs) -> (z_star, SolverStats)``."""
from __future__ import annotations

from typing import Callable

from .anderson import anderson
from .broyden import broyden
from .forward import forward_iteration

__all__ = ["SOLVERS", "SOLVER_OPTIONS", "get_solver", "solver_options"]

SOLVERS: dict[str, Callable] = {
    "anderson": anderson,
    "broyden": broyden,
    "forward": forward_iteration,
}

#: each solver's own options with their defaults: Anderson's window, mixing and (relative)
#: regularisation, Broyden's memory, forward iteration's damping. Every DEQ (force field and
#: conv classifier) reads them through :func:`solver_options`.
SOLVER_OPTIONS: dict[str, dict[str, int | float]] = {
    "anderson": {"m": 5, "beta": 1.0, "lam": 1e-4},
    "broyden": {"memory": 20},
    "forward": {"damping": 0.0},
}
_CHECKS = {"m": (int, lambda v: v >= 1, ">= 1"), "beta": (float, lambda v: v > 0, "> 0"),
           "lam": (float, lambda v: v >= 0, ">= 0"), "memory": (int, lambda v: v >= 1, ">= 1"),
           "damping": (float, lambda v: 0 <= v < 1, "in [0, 1)")}


def solver_options(solver: str, given: dict | None = None, where: str = "deq") -> dict[str, int | float]:
    """``solver``'s options: the defaults of :data:`SOLVER_OPTIONS` updated by ``given``, checked
    (unknown keys, types and ranges are errors naming ``where.solver.key``)."""
    get_solver(solver)
    out = dict(SOLVER_OPTIONS[solver])
    for key, value in (given or {}).items():
        if key not in out:
            raise ValueError(f"unknown {where}.{solver} option {key!r}; valid: {sorted(out)}")
        kind, ok, text = _CHECKS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and int(value) != value):
            raise ValueError(f"{where}.{solver}.{key} must be {'an integer' if kind is int else 'a number'}, "
                             f"got {value!r}")
        if not ok(kind(value)):
            raise ValueError(f"{where}.{solver}.{key} must be {text}, got {value!r}")
        out[key] = kind(value)
    return out


def get_solver(name: str) -> Callable:
    """Solver function by name: ``"anderson"``, ``"broyden"`` or ``"forward"``.

    Raises:
        ValueError: for any other name (the message lists the valid ones).
    """
    try:
        return SOLVERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}") from None
