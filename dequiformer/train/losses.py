"""Energy and force losses on normalised quantities, fixed-point correction, error sums.

Errors are divided by the model's output scales before the loss is taken, so the loss is
what the heads see: ``(E_pred - E_true) / energy_scale`` per structure and
``(F_pred - F_true) / force_scale`` per atom. Loss kinds:

- ``l2mae``: energy ``|dE|``; forces ``||dF_i||_2`` averaged over atoms (EquiformerV2's L2MAE),
- ``mae``:   energy ``|dE|``; forces ``|dF_ic|`` averaged over components,
- ``mse``:   energy ``dE^2``; forces ``dF_ic^2`` averaged over components.

Atoms flagged ``fixed`` (OC20 subsurface) are excluded from force losses and metrics.

Each loss is a sum divided by a denominator the trainer chooses: the local count in a single
process, or ``global_count / world_size`` under DDP, whose gradient averaging then makes the
update equal to that of one process on the whole global batch.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data.graph import AtomicGraph

LOSS_KINDS = ("l2mae", "mae", "mse")
LOSS_ALIASES = {"l1": "mae", "l2": "mse", "l2_mae": "l2mae", "l2mae": "l2mae", "mae": "mae", "mse": "mse"}


def loss_name(name: Any, key: str = "loss") -> str:
    """Canonical loss kind for ``name`` (``l1`` -> ``mae``); ValueError naming ``key`` otherwise."""
    canon = LOSS_ALIASES.get(str(name).strip().lower())
    if canon is None:
        raise ValueError(f"{key}: unknown loss {name!r}; valid: {list(LOSS_KINDS)} (aliases: l1 = mae, l2 = mse)")
    return canon


def force_mask(graph: AtomicGraph) -> torch.Tensor:
    """``[N]`` bool, atoms whose forces count (not ``fixed``)."""
    if graph.fixed is None:
        return torch.ones(graph.num_atoms, dtype=torch.bool, device=graph.pos.device)
    return ~graph.fixed.bool()


def energy_loss_sum(pred: torch.Tensor, target: torch.Tensor, scale: float, kind: str) -> torch.Tensor:
    """Sum over structures of the energy loss; pred/target ``[B]`` (training units), scalar out.

    Computed in float64 so that large total energies (MD17: ~1e5 kcal/mol) keep their digits.
    """
    err = (pred.to(torch.float64) - target.to(torch.float64)) / float(scale)
    return (err * err).sum() if kind == "mse" else err.abs().sum()


def force_loss_sum(pred: torch.Tensor, target: torch.Tensor, scale: float, kind: str,
                   mask: torch.Tensor) -> torch.Tensor:
    """Sum of the force loss over free atoms (``l2mae``) or their components (``mae``/``mse``).

    pred/target ``[N, 3]`` (training units), mask ``[N]`` bool.
    """
    err = (pred - target.to(pred.dtype))[mask] / float(scale)
    if kind == "l2mae":
        return torch.linalg.vector_norm(err, dim=-1).sum()
    if kind == "mae":
        return err.abs().sum()
    return (err * err).sum()


def stress_loss_sum(pred: torch.Tensor, target: torch.Tensor, scale: float, kind: str) -> torch.Tensor:
    """Sum over structures of the stress loss; pred/target ``[B, 3, 3]`` (energy unit / A^3).

    ``l2mae``: Frobenius norm of the error per structure; ``mae``/``mse``: summed over the nine
    components. ``scale`` is the force scale (the stress has no statistics of its own in the
    normaliser; energy/A^3 and energy/A differ by the A^2 of a typical cell face).
    """
    err = (pred - target.to(pred.dtype)) / float(scale)
    if kind == "l2mae":
        return torch.linalg.matrix_norm(err).sum()
    if kind == "mae":
        return err.abs().sum()
    return (err * err).sum()


def loss_counts(graph: AtomicGraph, force_kind: str) -> tuple[int, int]:
    """Local denominators ``(n_energy, n_force)``: structures, and free atoms (``l2mae``) or
    free-atom components (``mae``/``mse``)."""
    n_free = int(force_mask(graph).sum())
    return graph.num_graphs, n_free if force_kind == "l2mae" else 3 * n_free


class ForceFieldLoss:
    """``energy_weight * energy_loss + force_weight * force_loss`` (+ gradient-force and
    correction terms).

    Args:
        energy_loss, force_loss: loss kinds (see module docstring).
        energy_weight, force_weight: dimensionless weights.
        grad_force_weight: weight of the force loss (same kind) on ``out["grad_forces"]``, the
            negative position gradient of the predicted energy. A direct-force model otherwise
            learns its energy from one label per structure only; this term lets the 3N force labels
            shape the energy too, which is what makes energies learnable in short runs.
        stress_weight: weight of the stress loss (same kind as the force loss, per structure: the
            Frobenius norm for ``l2mae``) on ``out["stress"]`` against ``graph.stress``, both divided
            by the force scale; batches without stress labels skip it.
        correction_weight: ``w`` of the fixed-point correction: with ``K`` decoded intermediate
            states (earliest first) term ``k`` gets ``w ** (K - k)``, so later states count more
            (TorchDEQ's geometric weighting; the final output has weight 1).
    """

    def __init__(self, energy_loss: str = "l2mae", force_loss: str = "l2mae", energy_weight: float = 1.0,
                 force_weight: float = 80.0, correction_weight: float = 0.0, grad_force_weight: float = 0.0,
                 stress_weight: float = 0.0) -> None:
        self.energy_kind = loss_name(energy_loss, "train.energy_loss")
        self.force_kind = loss_name(force_loss, "train.force_loss")
        self.energy_weight = float(energy_weight)
        self.force_weight = float(force_weight)
        self.correction_weight = float(correction_weight)
        self.grad_force_weight = float(grad_force_weight)
        self.stress_weight = float(stress_weight)

    def counts(self, graph: AtomicGraph) -> tuple[int, int]:
        """Local ``(n_energy, n_force)`` denominators of this batch."""
        return loss_counts(graph, self.force_kind)

    def term(self, out: dict, graph: AtomicGraph, scales: tuple[float, float], denoms: tuple[float, float],
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = energy_loss_sum(out["energy"], graph.energy, scales[0], self.energy_kind) / max(denoms[0], 1e-12)
        f = force_loss_sum(out["forces"], graph.forces, scales[1], self.force_kind, mask) / max(denoms[1], 1e-12)
        return e, f

    def __call__(self, out: dict, graph: AtomicGraph, scales: tuple[float, float],
                 denoms: tuple[float, float] | None = None, grad_forces: bool = True
                 ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scalar, float64) and its parts as floats.

        Args:
            out: model output with ``energy`` [B] and ``forces`` [N, 3] (and, for DEQ models in
                train mode, ``correction``: list of such dicts).
            graph: batch with labels ``energy`` [B] and ``forces`` [N, 3].
            scales: ``(energy_scale, force_scale)`` of the model (training units).
            denoms: ``(energy, force)`` denominators; default the local counts.
            grad_forces: whether this step takes the ``grad_force_weight`` term (``False`` on the
                steps that ``train.grad_force_every`` skips).
        """
        if graph.energy is None or graph.forces is None:
            raise ValueError("training batch has no energy/forces labels")
        if denoms is None:
            denoms = self.counts(graph)
        mask = force_mask(graph)
        e, f = self.term(out, graph, scales, denoms, mask)
        loss = self.energy_weight * e + self.force_weight * f
        parts = {"energy_loss": float(e.detach()), "force_loss": float(f.detach()), "correction_loss": 0.0,
                 "grad_force_loss": 0.0}
        if self.grad_force_weight > 0 and grad_forces:
            if out.get("grad_forces") is None:
                raise ValueError("grad_force_weight > 0 needs out['grad_forces'] (-dE/dpos)")
            gf = force_loss_sum(out["grad_forces"], graph.forces, scales[1], self.force_kind, mask) / max(denoms[1], 1e-12)
            loss = loss + self.grad_force_weight * gf
            parts["grad_force_loss"] = float(gf.detach())
        if self.stress_weight > 0 and graph.stress is not None and out.get("stress") is not None:
            st = stress_loss_sum(out["stress"], graph.stress, scales[1], self.force_kind) / max(denoms[0], 1e-12)
            loss = loss + self.stress_weight * st
            parts["stress_loss"] = float(st.detach())
        corrections = out.get("correction") or []
        if corrections and self.correction_weight > 0:
            k_total = len(corrections)
            corr = loss.new_zeros(())
            for k, c in enumerate(corrections):
                ce, cf = self.term(c, graph, scales, denoms, mask)
                corr = corr + self.correction_weight ** (k_total - k) * (self.energy_weight * ce + self.force_weight * cf)
            loss = loss + corr
            parts["correction_loss"] = float(corr.detach())
        loss = loss + self.add_penalties(out, parts)
        parts["loss"] = float(loss.detach())
        return loss, parts

    @staticmethod
    def add_penalties(out: dict, parts: dict[str, float]) -> torch.Tensor:
        """The DEQ's contractivity penalties in ``out`` (already weighted by ``deq.jacobian_reg`` /
        ``deq.radius_reg``) summed into one term (0 when there are none); their values go to
        ``parts`` (``jacobian_loss``, ``radius_loss``, ``train_radius``)."""
        total = torch.zeros(())
        jac = out.get("jacobian_loss")
        if jac is not None:
            total = total + jac
            parts["jacobian_loss"] = float(jac.detach())
        rad = out.get("radius_loss")
        if rad is not None:
            total = total + rad
            parts["radius_loss"] = float(rad.detach())
            parts["train_radius"] = float(out["train_radius"].mean())
        return total


def error_sums(out: dict, graph: AtomicGraph) -> dict[str, float]:
    """Absolute-error sums for MAE metrics in training units.

    Returns ``energy_abs`` (sum over structures of ``|dE|``), ``n_energy``, ``forces_abs`` (sum
    over free-atom components of ``|dF|``), ``n_forces`` (number of those components),
    ``stress_abs`` / ``n_stress`` (stress components, when the model gave a stress and the batch
    has labels),
    ``steps`` (sum of solver steps over structures) and ``n_steps``, and after an IFT backward
    ``bwd_steps`` / ``n_bwd_steps`` for the adjoint solve.
    """
    mask = force_mask(graph)
    e = (out["energy"].detach().to(torch.float64) - graph.energy.to(torch.float64)).abs()
    f = (out["forces"].detach() - graph.forces.to(out["forces"].dtype))[mask].abs().to(torch.float64)
    sums = {"energy_abs": float(e.sum()), "n_energy": float(e.numel()),
            "forces_abs": float(f.sum()), "n_forces": float(f.numel())}
    if out.get("stress") is not None and graph.stress is not None:
        s = (out["stress"].detach().to(torch.float64) - graph.stress.to(torch.float64)).abs()
        sums["stress_abs"] = float(s.sum())
        sums["n_stress"] = float(s.numel())
    solver = out.get("solver")
    if solver is not None:
        sums["steps"] = float(solver.steps.detach().to(torch.float64).sum())
        sums["n_steps"] = float(solver.steps.numel())
        sums["max_steps"] = float(solver.steps.max()) if solver.steps.numel() else 0.0
        sums["unconverged"] = float((~solver.converged.detach()).sum())
        if solver.backward.get("steps"):  # filled once the IFT backward has run
            sums["bwd_steps"] = float(sum(solver.backward["steps"]))
            sums["n_bwd_steps"] = float(len(solver.backward["steps"]))
    return sums
