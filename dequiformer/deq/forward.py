"""Plain (optionally damped) fixed-point iteration: the "standard" DEQ baseline."""
from __future__ import annotations

from typing import Callable

import torch

from .graph_ops import resolve_graph_index
from .progress import SolverProgress
from .stats import SolverStats

__all__ = ["forward_iteration", "flat_map"]


def flat_map(
    f: Callable[[torch.Tensor], torch.Tensor], shape: torch.Size
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap ``f: [N, *feat] -> [N, *feat]`` as a map on flattened iterates ``[N, D]``.

    When ``f`` has a method ``evaluate_rows(z, active_rows)`` (``active_rows`` [N] bool; it
    returns ``f(z)`` on the active rows, any finite values elsewhere) the wrapper exposes it
    as ``flat.rows``; solvers then skip graphs that have already converged.
    """
    n = shape[0]

    def flat(z: torch.Tensor) -> torch.Tensor:
        out = f(z.reshape(shape))
        if out.shape != shape:
            raise ValueError(f"f changed the state shape: {tuple(shape)} -> {tuple(out.shape)}")
        return out.reshape(n, -1)

    partial = getattr(f, "evaluate_rows", None)
    if partial is not None:
        def rows(z: torch.Tensor, active_rows: torch.Tensor) -> torch.Tensor:
            return partial(z.reshape(shape), active_rows).reshape(n, -1)

        flat.rows = rows  # type: ignore[attr-defined]
    return flat


def forward_iteration(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 40,
    *,
    damping: float = 0.0,
    eps: float = 1e-8,
    trace: bool = False,
    n_states: int = 0,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``z = f(z)`` per graph by iterating ``z <- (1 - damping) f(z) + damping z``.

    ``damping = 0`` is plain iteration ``z <- f(z)``; ``damping`` in ``(0, 1)`` keeps that
    fraction of the current iterate (helps oscillating maps).

    Args:
        f: ``[N, *feat] -> [N, *feat]``, evaluated on the full batch.
        z0: ``[N, *feat]`` initial iterate; rows belong to graphs.
        graph_index: ``[N]`` long graph of each row; ``None`` = one problem per row.
        num_graphs: ``B`` (inferred when ``None``).
        tol: relative residual per graph below which a graph has converged.
        max_iter: maximum evaluations of ``f``.
        damping: see above, in ``[0, 1)``.
        eps: added to ``||f(z)||_g`` in the relative residual.
        trace: record the ``[B]`` residuals of every evaluation.
        n_states: number of intermediate iterates to keep in ``stats.states``.

    Returns:
        ``(z_star [N, *feat], SolverStats)``; semantics in :mod:`dequiformer.deq.progress`.
    """
    if not 0.0 <= damping < 1.0:
        raise ValueError(f"damping must be in [0, 1), got {damping}")
    with torch.no_grad():
        shape = z0.shape
        x = z0.detach().reshape(shape[0], -1).clone()
        gi, nb = resolve_graph_index(graph_index, shape[0], num_graphs, z0.device)
        g = flat_map(f, shape)
        progress = SolverProgress(x, gi, nb, tol, max_iter, eps, trace, n_states)
        for k in range(max_iter):
            fx = progress.observe(x, progress.evaluate(g, x))
            if progress.all_done or k == max_iter - 1:
                break
            x = progress.freeze(fx if damping == 0.0 else (1.0 - damping) * fx + damping * x)
        return progress.finish(shape)
