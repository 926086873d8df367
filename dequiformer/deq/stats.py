"""What a fixed-point solve reports: per-graph steps, residuals and convergence."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["SolverStats"]


@dataclass
class SolverStats:
    """Statistics of one batched fixed-point solve (one problem per graph).

    Attributes:
        steps: ``[B]`` long, evaluations of ``f`` graph ``g`` needed: the evaluation at
            which it converged (or at which ``f`` went non-finite on it); ``max_iter``
            when it did not converge.
        residual: ``[B]`` final relative residual ``||f(z)-z||_g / (||f(z)||_g + eps)``
            of the accepted iterate ``z`` of each graph; ``inf`` where ``f`` returned
            non-finite values for the graph.
        converged: ``[B]`` bool, ``residual < tol``.
        nfe: evaluations of ``f`` on the whole batch (every call counts once, whatever
            the number of graphs). ``fixed_point_with_grad`` adds the calls it makes
            with gradient tracking (``f(z*)``, phantom steps, correction states).
        trace: when requested, one ``[B]`` tensor of residuals per evaluation (graphs
            already finished repeat their final residual).
        states: ``n_states`` detached intermediate iterates ``[N, *feat]``, roughly evenly
            spaced over the evaluations made (the last ones may be the final output).
        backward: filled by the IFT backward hook when backward runs: ``steps``,
            ``residual``, ``converged``, ``nfe`` of the backward (adjoint) solve, as plain
            python values (see :meth:`as_dict`).
        adjoint: the statistics of the adjoint solve ``g = J^T g + dE/dz*`` behind conservative
            forces / stress at this fixed point, when one ran (else None).
    """

    steps: torch.Tensor
    residual: torch.Tensor
    converged: torch.Tensor
    nfe: int
    trace: list[torch.Tensor] | None = None
    states: list[torch.Tensor] = field(default_factory=list)
    backward: dict[str, Any] = field(default_factory=dict)
    adjoint: "SolverStats | None" = None

    @property
    def num_graphs(self) -> int:
        """Number of graphs ``B``."""
        return int(self.steps.numel())

    def as_dict(self) -> dict[str, Any]:
        """Plain python summary (JSON-friendly except that residuals may be ``inf``).

        Keys: ``steps`` (list[int]), ``residual`` (list[float]), ``converged``
        (list[bool]), ``nfe``, ``mean_steps``, ``max_steps``, ``residual_max``,
        ``unconverged`` (count), ``backward`` when a backward solve ran and ``adjoint`` (the
        same keys) when an adjoint solve for conservative forces ran.
        """
        steps = [int(s) for s in self.steps.detach().cpu().tolist()]
        residual = [float(r) for r in self.residual.detach().cpu().tolist()]
        converged = [bool(c) for c in self.converged.detach().cpu().tolist()]
        out: dict[str, Any] = {
            "steps": steps,
            "residual": residual,
            "converged": converged,
            "nfe": int(self.nfe),
            "mean_steps": (sum(steps) / len(steps)) if steps else 0.0,
            "max_steps": max(steps) if steps else 0,
            "residual_max": max(residual) if residual else 0.0,
            "unconverged": sum(1 for c in converged if not c),
        }
        if self.backward:
            out["backward"] = dict(self.backward)
        if self.adjoint is not None:
            out["adjoint"] = self.adjoint.as_dict()
        return out
