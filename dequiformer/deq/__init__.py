"""Fixed-point machinery of the DEQ: per-graph solvers, implicit gradients, warm starts.

Nothing here knows about chemistry: a state is ``[N, *feat]`` whose rows belong to
graphs (``graph_index``), and each graph is its own fixed-point problem.
"""
from .anderson import anderson
from .broyden import broyden
from .forward import forward_iteration
from .implicit import GRADIENT_MODES, fixed_point_with_grad
from .solvers import SOLVERS, get_solver
from .stats import SolverStats
from .warm_start import WarmStartMismatch, WarmStartStore

__all__ = [
    "GRADIENT_MODES",
    "SOLVERS",
    "SolverStats",
    "WarmStartMismatch",
    "WarmStartStore",
    "anderson",
    "broyden",
    "fixed_point_with_grad",
    "forward_iteration",
    "get_solver",
]
