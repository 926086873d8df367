"""The solver settings every DEQ config shares (force field and conv classifier): which solver,
its own options (:data:`dequiformer.deq.solvers.SOLVER_SCHEMAS`), forward and adjoint
tolerances and budgets, and the gradient mode. A model's ``deq`` schema is
``solve_schema(...)`` plus its own keys."""
from __future__ import annotations

from typing import Sequence

from ..schema import Option
from .implicit import GRADIENT_MODES
from .solvers import SOLVER_SCHEMAS, SOLVERS

__all__ = ["solve_schema"]


def solve_schema(*, tol: float, max_iter: int, b_tol: float | None, b_max_iter: int | None,
                 solvers: Sequence[str] = tuple(SOLVERS), grad_modes: Sequence[str] = GRADIENT_MODES) -> dict[str, Option]:
    """The shared ``deq`` options with these defaults. ``tol`` / ``b_tol`` are relative residuals
    per graph (or image); ``b_tol`` / ``b_max_iter`` ``None`` means "as the forward solve"."""
    return {
        "solver": Option(solvers[0], str, choices=tuple(solvers)),
        # per-solver options: Anderson's window / mixing / regularisation, Broyden's memory,
        # forward iteration's damping (only the named solver's are used)
        **{name: Option(None, dict, fields=SOLVER_SCHEMAS[name]) for name in solvers},
        "max_iter": Option(max_iter, int, low=1),
        "tol": Option(tol, float, low=0, low_open=True),
        "grad": Option("ift", str, choices=tuple(grad_modes)),
        "b_tol": Option(b_tol, float, low=0, low_open=True, nullable=b_tol is None),
        "b_max_iter": Option(b_max_iter, int, low=1, nullable=b_max_iter is None),
    }
