"""A fixed number of damped steps from a predicted start: the corrector of ASPC.

Kolafa's always-stable predictor-corrector (ASPC; J. Comput. Chem. 25, 335, 2004), made for the
self-consistent induced dipoles of polarisable force fields, predicts the next MD step's solution
from the last ``k + 2`` and then takes one damped step ``z <- w f(z) + (1 - w) z`` with
``w = (k + 2) / (2k + 3)``, storing the *damped* value for the next prediction. Solved that way
the history's errors stay bounded without a convergence test. With ``k = 0`` the predictor is the
linear extrapolation ``2 z_n - z_{n-1}`` and ``w = 2/3``.

On the DEQuiformer layer (``configs/demo/README.md``, session 6), along 0.5 fs aspirin frames, a
contractive layer (Jacobian radius about 0.6) needs two damped steps: one step, ``k >= 1``,
storing ``f(z)`` instead of the damped value, or ``w = 1`` all diverge. The layer must be
contractive: a layer with radius above 1 diverges under any fixed number of steps.
"""
from __future__ import annotations

from typing import Callable

import torch

from .forward import flat_map
from .graph_ops import graph_norm, resolve_graph_index
from .stats import SolverStats

__all__ = ["ASPC_MIXING", "corrector_steps"]

#: Kolafa's damping ``w = (k + 2) / (2k + 3)`` for ``k = 0`` (the linear predictor)
ASPC_MIXING = 2.0 / 3.0


def corrector_steps(
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    graph_index: torch.Tensor | None = None,
    num_graphs: int | None = None,
    steps: int = 2,
    mixing: float = ASPC_MIXING,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, SolverStats]:
    """``steps`` damped steps ``z <- mixing f(z) + (1 - mixing) z`` from ``z0`` ``[N, *feat]``.

    Returns the last damped iterate (not ``f`` of it: that is what the next prediction must be
    built from) and statistics: ``steps`` per graph, ``residual`` the relative residual
    ``||f(z) - z|| / ||f(z)||`` of the last step per graph, ``converged`` where every value stayed
    finite (a corrector has no tolerance). A graph whose ``f`` goes non-finite keeps ``z0``.
    """
    if steps < 1:
        raise ValueError(f"corrector steps must be >= 1, got {steps}")
    if not 0.0 < mixing <= 1.0:
        raise ValueError(f"mixing must be in (0, 1], got {mixing}")
    with torch.no_grad():
        shape = z0.shape
        z = z0.detach().reshape(shape[0], -1)
        gi, nb = resolve_graph_index(graph_index, shape[0], num_graphs, z0.device)
        g = flat_map(f, shape)
        residual = z.new_zeros(nb)
        for _ in range(steps):
            fz = g(z)
            residual = graph_norm(fz - z, gi, nb) / (graph_norm(fz, gi, nb) + eps)
            z = mixing * fz + (1.0 - mixing) * z
        finite = torch.isfinite(residual)
        z = torch.where(finite[gi].unsqueeze(1), z, z0.detach().reshape(shape[0], -1))
        stats = SolverStats(
            steps=torch.full((nb,), steps, dtype=torch.long, device=z.device),
            residual=torch.where(finite, residual, torch.full_like(residual, float("inf"))),
            converged=finite, nfe=steps,
        )
        return z.reshape(shape), stats
