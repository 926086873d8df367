"""Is the implicit layer still contractive? Per-graph estimates of the Jacobian's spectral radius.

A fixed-point iteration converges locally when the spectral radius ``rho(J)`` of
``J = df/dz`` at ``z*`` is below 1; Anderson tolerates somewhat more, but a radius creeping
towards and past 1 during training is what precedes solves that stop converging. Power
iteration on ``J^T`` (vector-Jacobian products, the same operation as the IFT backward)
estimates ``rho(J^T) = rho(J)`` per graph.
"""
from __future__ import annotations

from typing import Callable

import torch

from .graph_ops import graph_norm, resolve_graph_index

__all__ = ["jacobian_frobenius", "jacobian_spectral_radius", "spectral_radius_penalty"]


def jacobian_frobenius(f: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """One-sample Hutchinson estimate of ``||df/dz||_F^2 / dim`` at ``z`` ``[N, D]``, differentiable
    in ``f``'s parameters (a regulariser that keeps the layer contractive; Bai et al. 2021).

    ``E_v ||v^T J||^2 = ||J||_F^2`` for ``v ~ N(0, I)``; dividing by the state size ``N * D``
    makes it the mean squared singular value, about ``rho^2`` for a well-spread spectrum.
    """
    zr = z.detach().requires_grad_(True)
    fz = f(zr)
    v = torch.randn_like(fz)
    (vjp,) = torch.autograd.grad(fz, zr, v, create_graph=True)
    return vjp.pow(2).sum() / max(vjp.numel(), 1)


def jacobian_spectral_radius(
    f: Callable[[torch.Tensor], torch.Tensor],
    z_star: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    iters: int = 10,
    seed: int = 0,
) -> torch.Tensor:
    """Power-iteration estimate of ``rho(df/dz)`` at ``z_star`` for each graph.

    Args:
        f: ``[N, *feat] -> [N, *feat]``, graphs independent of each other.
        z_star: ``[N, *feat]`` point to linearise at (normally the fixed point).
        graph_index, num_graphs: rows -> graphs, as for the solvers.
        iters: power iterations (each one vector-Jacobian product on the whole batch).
        seed: seed of the random start vector (the estimate is deterministic).

    Returns:
        ``[B]`` float64: ``||J^T v_k||_g / ||v_k||_g`` after ``iters`` normalised steps, a lower
        estimate of the spectral norm that tends to the spectral radius of the dominant mode.
    """
    gi, nb = resolve_graph_index(graph_index, z_star.shape[0], num_graphs, z_star.device)
    with torch.enable_grad():
        z = z_star.detach().requires_grad_(True)
        fz = f(z)
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        v = torch.randn(z.shape, generator=gen, dtype=torch.float64).to(device=z.device, dtype=z.dtype)
        ratio = _power_iteration(fz, z, v, gi, nb, max(int(iters), 1), differentiable=False)
    return ratio.detach().to(torch.float64)


def _power_iteration(fz: torch.Tensor, z: torch.Tensor, v: torch.Tensor, gi: torch.Tensor, nb: int, iters: int,
                     differentiable: bool) -> torch.Tensor:
    """``iters`` normalised power steps ``v <- J^T v`` per graph; returns ``[B]`` ratios
    ``||J^T v||_g / ||v||_g`` of the last step, which (with ``differentiable``) keeps its graph to
    the parameters of ``f``."""
    ratio = torch.zeros(nb, dtype=fz.dtype, device=z.device)
    for k in range(iters):
        norm = graph_norm(v.reshape(v.shape[0], -1), gi, nb).clamp_min(torch.finfo(v.dtype).tiny)
        v = v / norm[gi].view(-1, *([1] * (v.dim() - 1)))
        last = differentiable and k == iters - 1
        (jtv,) = torch.autograd.grad(fz, z, v, retain_graph=True, create_graph=last, allow_unused=True)
        if jtv is None:  # f does not depend on z: J = 0
            return torch.zeros(nb, dtype=fz.dtype, device=z.device)
        ratio = graph_norm(jtv.reshape(jtv.shape[0], -1), gi, nb)
        v = jtv.detach()
    return ratio


def spectral_radius_penalty(
    f: Callable[[torch.Tensor], torch.Tensor],
    z_star: torch.Tensor,
    graph_index: torch.Tensor | None,
    num_graphs: int | None,
    target: float,
    iters: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge on the per-graph spectral radius: ``mean_g relu(rho_g - target)^2``, differentiable in
    ``f``'s parameters, and the ``[B]`` estimates ``rho_g`` (detached).

    ``rho_g`` is the power-iteration estimate of :func:`jacobian_spectral_radius` from a random
    start (``iters`` vector-Jacobian products; the last one keeps its graph). Unlike the Frobenius
    penalty (the mean squared singular value) it acts on the dominant mode, the one that decides
    how many solver steps a warm start needs, and only while that mode is above ``target``.
    """
    gi, nb = resolve_graph_index(graph_index, z_star.shape[0], num_graphs, z_star.device)
    z = z_star.detach().requires_grad_(True)
    fz = f(z)
    ratio = _power_iteration(fz, z, torch.randn_like(z), gi, nb, max(int(iters), 1), differentiable=True)
    return torch.relu(ratio - float(target)).pow(2).mean(), ratio.detach()
