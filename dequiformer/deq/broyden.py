"""Limited-memory "good" Broyden root finding on ``g(z) = f(z) - z``, one problem per graph.

The inverse Jacobian of ``g`` is approximated as ``B = -I + sum_i u_i v_i^T`` where every
outer product acts within a graph (the true Jacobian is block diagonal over graphs), so
``B x = -x + sum_i u_i <v_i, x>_graph``. The step is ``dz = -B g(z)`` (the first one is
a plain fixed-point step), and after it the good Broyden (Sherman-Morrison) update::

    u = (dz - B dg) / <dz, B dg>_graph,    v^T = dz^T B

is appended. When ``memory`` terms are held the approximation restarts from ``-I``
(dropping single terms of this additive form would leave a matrix that is no Broyden
approximant). A graph whose denominator is zero or non-finite skips the update.
No line search: one evaluation of ``f`` per step.
"""
from __future__ import annotations

from typing import Callable

import torch

from .forward import flat_map
from .graph_ops import graph_dot, graph_sum, resolve_graph_index, rows
from .progress import SolverProgress
from .stats import SolverStats

__all__ = ["broyden"]


class _InverseJacobian:
    """``-I + sum_i u_i v_i^T`` with per-graph inner products; ``u, v`` stored as ``[L, N, D]``."""

    def __init__(self, like: torch.Tensor, memory: int, graph_index: torch.Tensor, num_graphs: int) -> None:
        self.us = like.new_zeros((memory,) + tuple(like.shape))
        self.vs = like.new_zeros((memory,) + tuple(like.shape))
        self.size = 0
        self.gi, self.nb = graph_index, num_graphs

    def _apply(self, left: torch.Tensor, right: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return -x
        coeff = graph_sum(torch.einsum("lnd,nd->nl", right[: self.size], x), self.gi, self.nb)
        return -x + torch.einsum("nl,lnd->nd", rows(coeff, self.gi), left[: self.size])

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``B x`` for ``x`` ``[N, D]``."""
        return self._apply(self.us, self.vs, x)

    def rmatvec(self, x: torch.Tensor) -> torch.Tensor:
        """``x^T B`` (as ``[N, D]``) for ``x`` ``[N, D]``."""
        return self._apply(self.vs, self.us, x)

    def update(self, dz: torch.Tensor, dg: torch.Tensor, frozen: torch.Tensor) -> None:
        """Good Broyden update from a step ``dz`` and the change ``dg`` of ``g``; skip ``frozen`` graphs ``[B]``."""
        vt = self.rmatvec(dz)
        b_dg = self.matvec(dg)
        denominator = graph_dot(vt, dg, self.gi, self.nb)
        good = torch.isfinite(denominator) & (denominator != 0) & ~frozen
        denominator = torch.where(good, denominator, torch.ones_like(denominator))
        keep = rows(good, self.gi).unsqueeze(1)
        u = torch.where(keep, (dz - b_dg) / rows(denominator, self.gi).unsqueeze(1), torch.zeros_like(dz))
        vt = torch.where(keep, vt, torch.zeros_like(vt))
        finite = torch.isfinite(u).all(dim=1, keepdim=True) & torch.isfinite(vt).all(dim=1, keepdim=True)
        u = torch.where(finite, u, torch.zeros_like(u))
        vt = torch.where(finite, vt, torch.zeros_like(vt))
        if self.size == self.us.shape[0]:
            self.size = 0
        self.us[self.size] = u
        self.vs[self.size] = vt
        self.size += 1


def broyden(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 40,
    *,
    memory: int = 20,
    eps: float = 1e-8,
    trace: bool = False,
    n_states: int = 0,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``z = f(z)`` per graph with limited-memory good Broyden.

    Args:
        f: ``[N, *feat] -> [N, *feat]``, evaluated on the full batch.
        z0: ``[N, *feat]`` initial iterate; rows belong to graphs.
        graph_index: ``[N]`` long graph of each row; ``None`` = one problem per row.
        num_graphs: ``B`` (inferred when ``None``).
        tol: relative residual per graph below which a graph has converged.
        max_iter: maximum evaluations of ``f``.
        memory: rank-one terms kept before restarting from ``-I`` (capped at ``max_iter``).
            Costs ``2 * memory`` state-sized buffers.
        eps: added to ``||f(z)||_g`` in the relative residual.
        trace: record the ``[B]`` residuals of every evaluation.
        n_states: number of intermediate iterates to keep in ``stats.states``.

    Returns:
        ``(z_star [N, *feat], SolverStats)``; semantics in :mod:`dequiformer.deq.progress`.
    """
    if memory < 1:
        raise ValueError(f"memory must be >= 1, got {memory}")
    with torch.no_grad():
        shape = z0.shape
        x = z0.detach().reshape(shape[0], -1).clone()
        gi, nb = resolve_graph_index(graph_index, shape[0], num_graphs, z0.device)
        g = flat_map(f, shape)
        progress = SolverProgress(x, gi, nb, tol, max_iter, eps, trace, n_states)
        inverse = _InverseJacobian(x, min(int(memory), max_iter), gi, nb)
        gx = progress.observe(x, progress.evaluate(g, x)) - x
        for _ in range(max_iter - 1):
            if progress.all_done:
                break
            x_next = progress.freeze(x - inverse.matvec(gx))
            gx_next = progress.observe(x_next, progress.evaluate(g, x_next)) - x_next
            if progress.all_done:
                break
            inverse.update(x_next - x, gx_next - gx, progress.done)
            x, gx = x_next, gx_next
        return progress.finish(shape)
