"""Anderson acceleration (type II, Walker-Ni form), one problem per graph.

With iterates ``x_i``, residuals ``g_i = f(x_i) - x_i`` and a window of the last ``m``
of them, each step solves, per graph, for mixing weights ``alpha`` that minimise
``||sum_i alpha_i g_i||^2 + lam ||alpha||^2`` subject to ``sum_i alpha_i = 1``; written
as the bordered system (Deep AndersoNN / Walker & Ni)::

    [ 0   1^T       ] [ nu    ]   [ 1 ]
    [ 1   H + lam I ] [ alpha ] = [ 0 ],      H_ij = <g_i, g_j>_graph

and sets ``x_{k+1} = sum_i alpha_i (x_i + beta g_i)``.  ``H`` is kept up to date
incrementally (one new row/column per step, from scatter sums of row inner products)
and all graphs' systems are solved in one batched ``torch.linalg.solve_ex`` call.

``lam`` is relative: ``H`` is divided by the mean of its diagonal (the mean squared
residual norm in the window) before ``lam I`` is added. The same ``lam`` then
regularises a 3-atom and a 300-atom graph, and the first and the last step of a solve,
alike; an absolute ``lam`` would swamp ``H`` once residuals are small and reduce the
method to averaging the window.

Recovery: where a graph's system is singular or yields non-finite (or, for its
``lam``, impossibly large) weights, it is solved again with ``lam`` raised to
``max(100 lam, 1e-2)``; if that fails too, the graph's window is restarted
(``alpha`` = the newest entry only, i.e. one damped fixed-point step).
"""
from __future__ import annotations

from typing import Callable

import torch

from .forward import flat_map
from .graph_ops import graph_sum, resolve_graph_index, rows
from .progress import SolverProgress
from .secant_memory import SecantMemory, anderson_with_memory
from .stats import SolverStats

__all__ = ["anderson", "anderson_weights"]


def _solve_bordered(h: torch.Tensor, valid: torch.Tensor, lam: float) -> torch.Tensor:
    """Solve the bordered systems for ``h`` ``[B, m, m]`` (masked), ``valid`` ``[B, m]`` float.

    Window slots that are not valid get an identity row, so their weight is 0.
    Returns ``alpha`` ``[B, m]`` (NaN where the factorisation failed).
    """
    b, m = valid.shape
    a = h.new_zeros(b, m + 1, m + 1)
    a[:, 0, 1:] = valid
    a[:, 1:, 0] = valid
    diagonal = lam * valid + (1.0 - valid)
    a[:, 1:, 1:] = h + torch.diag_embed(diagonal)
    rhs = h.new_zeros(b, m + 1, 1)
    rhs[:, 0] = 1.0
    solution, info = torch.linalg.solve_ex(a, rhs)
    alpha = solution[:, 1:, 0]
    return torch.where((info != 0).unsqueeze(1), torch.full_like(alpha, float("nan")), alpha)


def _acceptable(alpha: torch.Tensor, lam: float) -> torch.Tensor:
    """``[B]`` bool: finite weights within the bound ``||alpha||^2 <= (1 + lam) / lam`` (times 10)."""
    floor = torch.finfo(alpha.dtype).eps
    bound = 10.0 * (1.0 + lam) / max(lam, floor)
    return torch.isfinite(alpha).all(dim=1) & (alpha.square().sum(dim=1) <= bound)


def anderson_weights(
    gram: torch.Tensor, valid: torch.Tensor, newest: int, lam: float, skip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anderson mixing weights per graph.

    Args:
        gram: ``[B, m, m]`` residual Gram matrices (entries of invalid slots are ignored).
        valid: ``[B, m]`` bool, which window slots hold history for each graph.
        newest: slot of the newest entry (always valid).
        lam: relative Tikhonov regularisation.
        skip: ``[B]`` bool, graphs that need no weights (finished); they get the newest entry.

    Returns:
        ``(alpha [B, m], restarted [B] bool)``; ``alpha`` sums to 1 per graph and is
        zero on invalid slots; ``restarted`` marks graphs whose window must be reset to
        the newest entry (their system could not be solved, or they were skipped).
    """
    if gram.dtype in (torch.float16, torch.bfloat16):  # solve small systems in float32
        alpha, restarted = anderson_weights(gram.float(), valid, newest, lam, skip)
        return alpha.to(gram.dtype), restarted
    vf = valid.to(gram.dtype)
    count = vf.sum(dim=1).clamp_min(1.0)
    scale = (gram.diagonal(dim1=1, dim2=2) * vf).sum(dim=1) / count
    usable = torch.isfinite(scale) & (scale > 0)
    if skip is not None:
        usable = usable & ~skip
    scale = torch.where(usable, scale, torch.ones_like(scale))
    mask = vf.unsqueeze(2) * vf.unsqueeze(1)
    h = torch.where(mask.bool(), gram / scale[:, None, None], torch.zeros_like(gram))

    alpha = _solve_bordered(h, vf, lam)
    ok = usable & _acceptable(alpha, lam)
    retry = usable & ~ok
    # on an accelerator the retry with a larger lam is solved for every graph and selected where
    # needed (a batch of tiny systems costs less than asking the device whether any graph needs
    # it); on the CPU asking is free and the retry is almost never needed
    if retry.device.type != "cpu" or bool(retry.any()):
        lam_retry = max(100.0 * lam, 1e-2)
        alpha_retry = _solve_bordered(h, vf, lam_retry)
        alpha = torch.where(retry.unsqueeze(1), alpha_retry, alpha)
        ok = ok | (retry & _acceptable(alpha_retry, lam_retry))
    newest_only = torch.zeros_like(alpha)
    newest_only[:, newest] = 1.0
    alpha = torch.where(ok.unsqueeze(1), alpha, newest_only)
    return alpha, ~ok


def anderson(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    tol: float = 1e-4,
    max_iter: int = 40,
    *,
    m: int = 5,
    beta: float = 1.0,
    lam: float = 1e-4,
    eps: float = 1e-8,
    trace: bool = False,
    n_states: int = 0,
    memory: SecantMemory | None = None,
) -> tuple[torch.Tensor, SolverStats]:
    """Solve ``z = f(z)`` per graph with Anderson acceleration.

    Args:
        f: ``[N, *feat] -> [N, *feat]``, evaluated on the full batch.
        z0: ``[N, *feat]`` initial iterate; rows belong to graphs.
        graph_index: ``[N]`` long graph of each row; ``None`` = one problem per row.
        num_graphs: ``B`` (inferred when ``None``).
        tol: relative residual per graph below which a graph has converged.
        max_iter: maximum evaluations of ``f``.
        m: window (history) size.
        beta: mixing, ``x_{k+1} = sum alpha_i ((1 - beta) x_i + beta f(x_i))``.
        lam: Tikhonov regularisation, relative to the mean squared residual in the window.
        eps: added to ``||f(z)||_g`` in the relative residual.
        trace: record the ``[B]`` residuals of every evaluation.
        n_states: number of intermediate iterates to keep in ``stats.states``.
        memory: secant pairs carried from earlier solves of nearly the same map (a trajectory's
            warm starts): the solve mixes over them (in difference form, window ``memory.m``
            instead of ``m``), adds its own, and also accepts a graph on the predicted residual of
            its next iterate (:mod:`dequiformer.deq.secant_memory`).

    Returns:
        ``(z_star [N, *feat], SolverStats)``; semantics in :mod:`dequiformer.deq.progress`.
    """
    if m < 1:
        raise ValueError(f"window m must be >= 1, got {m}")
    if beta <= 0:
        raise ValueError(f"mixing beta must be > 0, got {beta}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if memory is not None:
        gi, nb = resolve_graph_index(graph_index, z0.shape[0], num_graphs, z0.device)
        return anderson_with_memory(f, z0, gi, nb, memory, tol, max_iter, beta=beta, lam=lam, eps=eps, trace=trace,
                                    n_states=n_states)
    with torch.no_grad():
        shape = z0.shape
        x = z0.detach().reshape(shape[0], -1).clone()
        gi, nb = resolve_graph_index(graph_index, shape[0], num_graphs, z0.device)
        g = flat_map(f, shape)
        progress = SolverProgress(x, gi, nb, tol, max_iter, eps, trace, n_states)
        # the window keeps each iterate's residual g_i and its mixing target y_i = x_i + beta g_i
        # (not x_i): the next iterate sum_i alpha_i y_i is then one pass over the window instead
        # of two, which on wide iterates (a graph image: 49,152 numbers) is most of the
        # bookkeeping's memory traffic
        past_y = x.new_zeros((m,) + tuple(x.shape))
        past_g = x.new_zeros((m,) + tuple(x.shape))
        gram = x.new_zeros(nb, m, m)
        valid = torch.zeros(nb, m, dtype=torch.bool, device=x.device)
        for k in range(max_iter):
            fx = progress.observe(x, progress.evaluate(g, x))
            if progress.all_done or k == max_iter - 1:
                break
            slot = k % m
            torch.sub(fx, x, out=past_g[slot])
            torch.add(x, past_g[slot], alpha=beta, out=past_y[slot])
            dots = graph_sum(torch.einsum("nd,jnd->nj", past_g[slot], past_g), gi, nb)
            gram[:, slot, :] = dots
            gram[:, :, slot] = dots
            valid[:, slot] = True
            if k == 0:  # one entry in the window: alpha = [1] for every graph, nothing to solve
                x = progress.freeze(past_y[slot])  # (a warm start often needs just this one step)
                continue
            alpha, restarted = anderson_weights(gram, valid, slot, lam, skip=progress.done)
            valid &= ~restarted.unsqueeze(1)  # (no boolean-mask indexing: it would sync the host)
            valid[:, slot] = True
            a = rows(alpha, gi)
            x_next = torch.einsum("nj,jnd->nd", a, past_y)
            x = progress.freeze(x_next)
        return progress.finish(shape)
