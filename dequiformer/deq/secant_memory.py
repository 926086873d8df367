"""Anderson acceleration whose secant history is carried from one solve to the next.

Along a trajectory (MD, a relaxation) consecutive solves are of nearly the same map: ``f``
changes a little with the positions, and so does its Jacobian ``J``. Anderson's history, in
difference form, is a set of secant pairs ``(dx_i, dg_i)`` between consecutive iterates of one
solve, with ``dg_i ~ (J - I) dx_i``: a statement about ``J`` that stays nearly true at the next
step, unlike the residuals themselves. :class:`SecantMemory` keeps the last ``m`` pairs across
solves, so a warm-started solve mixes from its first evaluation on instead of starting with a
plain fixed-point step.

Its second use is the stopping test. After evaluating ``g_k = f(x_k) - x_k`` the least-squares
weights ``gamma = argmin ||g_k - dG gamma||`` give the next iterate ``x_{k+1} = f(x_k) - dF gamma``
(``dF = dX + dG``, type-II Anderson with mixing ``beta`` = 1) and, for a linear map, its residual
``g_k - dG gamma`` *without evaluating it*. Where that predicted relative residual is below
``tol``, the graph is accepted at ``x_{k+1}``: the same test the solvers apply to ``f(x_k)``,
whose error is ``J (J - I)^{-1}`` times its residual either way. On the session-10 demo DEQ
along held-out aspirin frames (0.5 fs) this accepted about half of the warm starts after their
first evaluation (configs/demo/README.md, session 11). Returning ``x_{k+1}`` also where ``f(x_k)``
passed, as it is predicted closer, changed nothing measurable (1.44 steps at 0.49 %).

Semantics otherwise as every solver here (:mod:`dequiformer.deq.progress`); a graph accepted by
prediction reports ``steps`` = the evaluations made and ``residual`` = the predicted one.
"""
from __future__ import annotations

from typing import Callable

import torch

from .forward import flat_map
from .graph_ops import graph_norm, graph_sum, rows
from .progress import SolverProgress
from .stats import SolverStats

__all__ = ["SecantMemory", "anderson_with_memory"]


class SecantMemory:
    """The last ``m`` secant pairs ``(dx, dg)`` (each ``[N, D]``) of the solves of one trajectory.

    The pairs belong to the rows of one batch of structures: the owner (the ASE calculator) resets
    the memory whenever its warm starts are dropped (other atoms, a jump, ``reset()``); a state of
    another shape resets it too.
    """

    def __init__(self, m: int = 5) -> None:
        if int(m) < 1:
            raise ValueError(f"secant memory size m must be >= 1, got {m}")
        self.m = int(m)
        self._dx: list[torch.Tensor] = []
        self._dg: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._dx)

    def reset(self) -> None:
        """Forget every pair."""
        self._dx.clear()
        self._dg.clear()

    def match(self, state: torch.Tensor) -> None:
        """Drop the pairs unless they have ``state``'s shape, dtype and device (``[N, D]``)."""
        if self._dx and (self._dx[0].shape != state.shape or self._dx[0].dtype != state.dtype
                         or self._dx[0].device != state.device):
            self.reset()

    def push(self, dx: torch.Tensor, dg: torch.Tensor) -> None:
        """Add one pair (detached); the oldest goes when there are more than ``m``."""
        self._dx.append(dx.detach())
        self._dg.append(dg.detach())
        del self._dx[:-self.m], self._dg[:-self.m]

    def mix(self, x: torch.Tensor, fx: torch.Tensor, graph_index: torch.Tensor, num_graphs: int,
            beta: float = 1.0, lam: float = 1e-4, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
        """The Anderson step from the iterate ``x`` and ``fx = f(x)`` (both ``[N, D]``).

        With ``g = fx - x``, solves per graph ``gamma = argmin ||g - dG gamma||^2 + lam s ||gamma||^2``
        (``s`` the mean squared norm of the graph's ``dg``, so ``lam`` is relative) and returns
        ``(x_next [N, D], predicted [B])``: ``x_next = x + beta g - (dX + beta dG) gamma`` and the
        predicted relative residual ``||g - dG gamma||_g / (||fx||_g + eps)``. A graph whose system
        cannot be solved gets ``gamma = 0`` (a plain damped step; ``predicted`` = its residual).
        """
        g = fx - x
        dg = torch.stack(self._dg)  # [m, N, D]
        dx = torch.stack(self._dx)
        k = dg.shape[0]
        gram = graph_sum(torch.einsum("ind,jnd->nij", dg, dg), graph_index, num_graphs)  # [B, m, m]
        rhs = graph_sum(torch.einsum("ind,nd->ni", dg, g), graph_index, num_graphs)  # [B, m]
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1)
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, torch.ones_like(scale))
        eye = torch.eye(k, dtype=g.dtype, device=g.device)
        system = gram / scale[:, None, None] + lam * eye
        gamma, info = torch.linalg.solve_ex(system, (rhs / scale[:, None]).unsqueeze(2))
        gamma = gamma[:, :, 0]
        ok = (info == 0) & torch.isfinite(gamma).all(dim=1)
        gamma = torch.where(ok.unsqueeze(1), gamma, torch.zeros_like(gamma))
        per_row = rows(gamma, graph_index)  # [N, m]
        predicted_g = g - torch.einsum("nj,jnd->nd", per_row, dg)
        x_next = x + beta * g - torch.einsum("nj,jnd->nd", per_row, dx + beta * dg)
        predicted = graph_norm(predicted_g, graph_index, num_graphs) / (graph_norm(fx, graph_index, num_graphs) + eps)
        return x_next, predicted


def anderson_with_memory(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor,
    num_graphs: int,
    memory: SecantMemory,
    tol: float = 1e-4,
    max_iter: int = 40,
    *,
    beta: float = 1.0,
    lam: float = 1e-4,
    eps: float = 1e-8,
    trace: bool = False,
    n_states: int = 0,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``z = f(z)`` per graph by Anderson mixing over ``memory``'s pairs plus this solve's own
    (added to ``memory`` as they come), accepting graphs on the residual of an evaluation or on
    the predicted residual of the next iterate (module docstring). ``graph_index`` ``[N]`` long
    and ``num_graphs`` as resolved by the caller; other arguments as :func:`~dequiformer.deq.anderson`.
    """
    with torch.no_grad():
        shape = z0.shape
        x = z0.detach().reshape(shape[0], -1).clone()
        memory.match(x)
        g = flat_map(f, shape)
        progress = SolverProgress(x, graph_index, num_graphs, tol, max_iter, eps, trace, n_states)
        previous: tuple[torch.Tensor, torch.Tensor] | None = None
        for k in range(max_iter):
            fx = progress.observe(x, progress.evaluate(g, x))
            residual = fx - x
            if previous is not None:  # a secant pair of this solve's map (finished graphs add zeros)
                memory.push(x - previous[0], residual - previous[1])
            previous = (x, residual)
            if progress.all_done or k == max_iter - 1:
                break
            if not len(memory):
                x = progress.freeze(x + beta * residual)
                continue
            x_next, predicted = memory.mix(x, fx, graph_index, num_graphs, beta=beta, lam=lam, eps=eps)
            progress.accept(predicted < tol, x_next, predicted)
            if progress.all_done:
                break
            x = progress.freeze(x_next)
        return progress.finish(shape)
