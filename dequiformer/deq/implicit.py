"""Fixed points with gradients: implicit (IFT), phantom, or none; fixed-point correction states.

For ``z* = f(z*)`` with ``f`` depending on parameters/inputs ``theta``, the implicit
function theorem gives ``dL/dtheta = g^T df/dtheta`` at ``z*`` with the adjoint ``g``
solving ``g = J^T g + dL/dz*`` (``J = df/dz`` at ``z*``). Here the output is attached
as ``z_out = f(z*)`` (one tracked evaluation), and a hook on ``z_out`` replaces the
incoming gradient ``v = dL/dz_out`` by the adjoint solution ``g`` before it flows into
``f``'s graph. The adjoint is solved with the same per-graph solver family, using
vector-Jacobian products of a fresh evaluation ``f(z*)`` made inside the hook (one
extra forward of ``f``; ``f`` must therefore be deterministic: random masks fixed).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .solvers import get_solver
from .stats import SolverStats

__all__ = ["adjoint_solve", "attach_tangent_solve", "fixed_point_with_grad", "GRADIENT_MODES"]

GRADIENT_MODES = ("ift", "phantom", "none")


def _as_solver(solver: str | Callable) -> Callable:
    return solver if callable(solver) else get_solver(solver)


def _recomputed(f: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f`` under activation checkpointing: its graph is rebuilt in backward, not stored.

    ``f`` must be deterministic between forward and backward (random masks fixed), which the
    solver semantics already require.
    """
    from torch.utils.checkpoint import checkpoint

    def run(z: torch.Tensor) -> torch.Tensor:
        return checkpoint(f, z, use_reentrant=False)

    return run


def adjoint_solve(
    f_z: torch.Tensor,
    z: torch.Tensor,
    v: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    *,
    solver: str | Callable = "anderson",
    solver_kwargs: dict[str, Any] | None = None,
    tol: float = 1e-6,
    max_iter: int = 40,
    g0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``g = J^T g + v`` per graph, ``J = d f_z / d z`` (``f_z = f(z)`` built with a graph).

    Args:
        f_z, z: ``[N, *feat]`` output and input of one tracked evaluation of ``f`` (``z`` requires
            grad, leaf or not); the graph is kept (vector-Jacobian products reuse it).
        v: ``[N, *feat]`` right-hand side (e.g. ``dE/dz*``); treated as a constant.
        solver, solver_kwargs, tol, max_iter: the solver family and its settings.
        g0: ``[N, *feat]`` warm start (e.g. the previous step's adjoint), default ``v``.

    Returns:
        ``(g [N, *feat] detached, stats)``.
    """
    vd = v.detach()

    def adjoint_map(y: torch.Tensor) -> torch.Tensor:
        (jty,) = torch.autograd.grad(f_z, z, y, retain_graph=True, allow_unused=True)
        return vd if jty is None else jty + vd

    start = vd if g0 is None else g0.detach().to(vd.dtype)
    g, stats = _as_solver(solver)(adjoint_map, start, graph_index, num_graphs, tol=tol, max_iter=max_iter,
                                  **dict(solver_kwargs or {}))
    return g.detach(), stats


def attach_tangent_solve(
    target: torch.Tensor,
    f_z: torch.Tensor,
    z: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    *,
    solver: str | Callable = "anderson",
    solver_kwargs: dict[str, Any] | None = None,
    tol: float = 1e-6,
    max_iter: int = 40,
    stats_out: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Make the gradient reaching ``target`` pass through ``(I - J)^{-1}`` (``J = d f_z / d z``).

    Differentiating an adjoint ``g = J^T g + v`` once more (a loss on ``g^T df/dtheta``, e.g. on
    forces ``-dE/dpos`` through a fixed point) needs ``dg = (I - J^T)^{-1} (dv + dJ^T g)``. Built
    as ``target = v + J^T g`` (value ``g``), plain backprop delivers the first Neumann term
    ``u0``; this hook replaces it by the solution of the tangent equation ``u = J u + u0``, which
    makes the second derivative exact. ``J u`` is a Jacobian-vector product, taken as the
    derivative of the (linear) vector-Jacobian product ``y -> J^T y`` built once here.

    Returns ``target`` (the hook is registered on it); ``stats_out``, when given, receives the
    tangent solve's statistics once backward has run.
    """
    y = torch.zeros_like(f_z, requires_grad=True)
    (jty,) = torch.autograd.grad(f_z, z, y, create_graph=True, retain_graph=True, allow_unused=True)

    def hook(u0: torch.Tensor | None) -> torch.Tensor | None:
        if u0 is None or jty is None:
            return u0
        b = u0.detach()

        def tangent_map(u: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                (ju,) = torch.autograd.grad(jty, y, u, retain_graph=True, allow_unused=True)
            return b if ju is None else ju + b

        u, stats = _as_solver(solver)(tangent_map, b, graph_index, num_graphs, tol=tol, max_iter=max_iter,
                                      **dict(solver_kwargs or {}))
        if stats_out is not None:
            stats_out.update(stats.as_dict())
        return u.to(u0.dtype)

    target.register_hook(hook)
    return target


def _attach_ift(
    f_star: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    z_star: torch.Tensor,
    graph_index: torch.Tensor | None,
    num_graphs: int | None,
    b_solve: Callable,
    b_kwargs: dict[str, Any],
    stats: SolverStats,
) -> torch.Tensor:
    """Register the adjoint-solving hook on ``f_star = f(z*)`` and return it."""

    def hook(v: torch.Tensor | None) -> torch.Tensor | None:
        if v is None:  # undefined gradient: nothing flows, nothing to solve
            return None
        with torch.enable_grad():
            h = z_star.detach().requires_grad_(True)
            f_h = f(h)
        kwargs = dict(b_kwargs)
        tol, max_iter = kwargs.pop("tol"), kwargs.pop("max_iter")
        g, b_stats = adjoint_solve(f_h, h, v, graph_index, num_graphs, solver=b_solve, solver_kwargs=kwargs,
                                   tol=tol, max_iter=max_iter)
        stats.backward.clear()
        stats.backward.update(b_stats.as_dict())
        stats.backward["f_evals"] = 1
        return g.to(v.dtype)

    f_star.register_hook(hook)
    return f_star


def fixed_point_with_grad(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    *,
    solver: str | Callable = "anderson",
    solver_kwargs: dict[str, Any] | None = None,
    tol: float = 1e-4,
    max_iter: int = 40,
    grad: str = "ift",
    b_solver: str | Callable | None = None,
    b_solver_kwargs: dict[str, Any] | None = None,
    b_tol: float = 1e-6,
    b_max_iter: int | None = None,
    phantom_steps: int = 1,
    phantom_tau: float = 1.0,
    n_states: int = 0,
    trace: bool = False,
    recompute: bool = False,
) -> tuple[torch.Tensor, SolverStats, list[torch.Tensor]]:
    """Solve ``z = f(z)`` per graph and return the fixed point with the requested gradient.

    Args:
        f: ``[N, *feat] -> [N, *feat]``; closes over parameters and input injection.
        z0: ``[N, *feat]`` initial iterate (e.g. zeros or a warm start); treated as a constant.
        graph_index: ``[N]`` long graph of each row; ``None`` = one problem per row.
        num_graphs: ``B`` (inferred when ``None``).
        solver: ``"anderson"`` | ``"broyden"`` | ``"forward"`` or a solver function.
        solver_kwargs: extra keyword arguments of the forward solver (``m``, ``beta``, ...).
        tol, max_iter: forward solve tolerance (relative residual per graph) and budget.
        grad: ``"ift"`` implicit gradient; ``"phantom"`` ``phantom_steps`` unrolled damped
            steps ``z <- (1 - tau) z + tau f(z)`` from ``z*``; ``"none"`` detached ``z*``.
        b_solver: adjoint solver (default: ``solver``); ``b_solver_kwargs`` default to
            ``solver_kwargs`` when the family is the same, else ``{}``.
        b_tol, b_max_iter: adjoint tolerance and budget (``b_max_iter`` defaults to ``max_iter``).
        phantom_steps, phantom_tau: phantom gradient steps (>= 1) and damping in ``(0, 1]``.
        n_states: intermediate iterates to return for fixed-point correction.
        trace: record per-evaluation residuals in ``stats.trace``.
        recompute: keep no activations of the tracked evaluations ``f(z*)`` and ``f(s)``
            between forward and backward; each is recomputed when its gradient is needed
            (activation checkpointing), so the memory held for backward is that of one layer
            evaluation at a time, not ``1 + n_states``, for ``1 + n_states`` extra ``f`` calls.

    Returns:
        ``(z_out [N, *feat], stats, correction_states)``.

        * Gradient path (grad mode enabled, ``grad != "none"`` and something in ``f``
          requires grad): ``z_out = f(z*)`` (IFT) or the last phantom step, attached to
          ``f``'s parameters and inputs; ``correction_states`` are ``f(s)`` with
          gradient tracking for each of the ``n_states`` iterates ``s`` in
          ``stats.states`` (1-step gradient), for an auxiliary loss.
        * Otherwise (inference, ``grad="none"``, or nothing requires grad):
          ``z_out = z*`` detached and ``correction_states = []``. Under
          ``torch.no_grad()`` or with ``grad="none"`` no extra evaluation is made; with
          grad enabled but nothing requiring grad, one probe ``f(z*)`` is made.

        ``stats.nfe`` counts every forward evaluation of ``f`` made here. With IFT, the
        adjoint solve's statistics appear in ``stats.backward`` once backward has run
        (its ``nfe`` counts vector-Jacobian products; ``f_evals`` the extra forward).
    """
    if grad not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient mode {grad!r}; valid: {', '.join(GRADIENT_MODES)}")
    if phantom_steps < 1:
        raise ValueError(f"phantom_steps must be >= 1, got {phantom_steps}")
    if not 0.0 < phantom_tau <= 1.0:
        raise ValueError(f"phantom_tau must be in (0, 1], got {phantom_tau}")
    solver_kwargs = dict(solver_kwargs or {})
    solve = _as_solver(solver)
    z_star, stats = solve(
        f, z0, graph_index, num_graphs, tol=tol, max_iter=max_iter, trace=trace, n_states=n_states, **solver_kwargs
    )
    if grad == "none" or not torch.is_grad_enabled():
        return z_star, stats, []

    tracked = _recomputed(f) if recompute else f
    f_star = tracked(z_star)
    stats.nfe += 1
    if not f_star.requires_grad:
        return z_star, stats, []

    if grad == "ift":
        if b_solver is None:
            b_solve = solve
            b_kwargs = dict(solver_kwargs if b_solver_kwargs is None else b_solver_kwargs)
        else:
            b_solve = _as_solver(b_solver)
            b_kwargs = dict(b_solver_kwargs or {})
        b_kwargs.update(tol=b_tol, max_iter=max_iter if b_max_iter is None else b_max_iter)
        z_out = _attach_ift(f_star, f, z_star, graph_index, num_graphs, b_solve, b_kwargs, stats)
    else:
        tau = phantom_tau
        z_out = f_star if tau == 1.0 else (1.0 - tau) * z_star + tau * f_star
        for _ in range(phantom_steps - 1):
            z_out = (1.0 - tau) * z_out + tau * f(z_out)
            stats.nfe += 1

    corrections = [tracked(state) for state in stats.states]
    stats.nfe += len(corrections)
    return z_out, stats, corrections
