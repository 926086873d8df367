"""Shared force-field skeleton: encoder -> trunk -> norm -> heads.

The explicit EquiformerV2 and the implicit DEQuiformer differ only in ``trunk``: a stack of
blocks applied once each, or one implicit layer solved to its fixed point.
"""
from __future__ import annotations

from typing import Any

import torch

from ..data.graph import AtomicGraph
from ..nn.context import EdgeContext
from ..nn.dropout import RecurrentDropout
from ..nn.norms import build_norm
from ..profiling import stage
from .derivatives import Displacement, displace, stress_from_strain_gradient
from .encoder import Encoder
from .heads import ClassificationHead, EnergyHead, ForceHead, OutputScaling
from .hparams import resolve


class ForceFieldModel(torch.nn.Module):
    """Base class. ``model(graph)`` returns ``{"energy": [B], "forces": [N, 3], ...}`` in the
    training units recorded in ``model.hparams`` (and ``"logits"`` [B, classes] for
    classification).

    The model contract the rest of the package relies on (never duck-typed): ``is_implicit``
    (its trunk is a fixed-point solve; then it has ``deq_cfg``, takes ``z0``/``tol``/``max_iter``
    and returns ``fixed_point`` and ``solver``), ``blocks_per_solver_step`` (layer-block
    evaluations per solver step: ``solver.steps`` times this counts blocks for either kind),
    ``conservative``, ``task``, ``cutoff``, ``max_neighbors``, ``units``.
    """

    #: the trunk is one implicit layer solved to its fixed point (DEQuiformer) rather than a stack
    is_implicit: bool = False

    def __init__(self, model_cfg: dict) -> None:
        super().__init__()
        hp = resolve(model_cfg)
        self.hparams: dict[str, Any] = hp
        self.cutoff = float(hp["cutoff"])
        self.max_neighbors = hp["max_neighbors"]
        self.max_num_elements = hp["max_num_elements"]
        self.encoder = Encoder(hp)
        self.norm = build_norm(hp["norm_type"], hp["lmax"], hp["sphere_channels"])
        self.task = hp["task"]
        if self.task == "classification":
            self.class_head = ClassificationHead(hp)
        else:
            self.energy_head = EnergyHead(hp)
            self.force_head = ForceHead(hp)
            self.scaling = OutputScaling(hp["max_num_elements"])

    @property
    def blocks_per_solver_step(self) -> int:
        """Block evaluations per reported solver step: 1 for an explicit model (whose ``steps``
        are its blocks), the blocks inside the implicit layer for a DEQ."""
        return len(self.blocks) if self.is_implicit else 1

    @property
    def units(self) -> dict[str, str]:
        return {"energy": self.hparams["energy_units"], "length": self.hparams["length_units"]}

    def dropout_modules(self) -> list[RecurrentDropout]:
        # found once: walking every submodule on each forward cost ~0.7 ms per force call
        cached = self.__dict__.get("_dropout_modules")
        if cached is None:
            cached = [m for m in self.modules() if isinstance(m, RecurrentDropout)]
            self.__dict__["_dropout_modules"] = cached
        return cached

    def check_graph(self, graph: AtomicGraph) -> None:
        """Clear errors for graphs this model cannot take."""
        dtype = next(self.parameters()).dtype
        if graph.pos.dtype != dtype:
            raise TypeError(
                f"graph positions are {graph.pos.dtype} but the model is {dtype}: build the graph with "
                f"dtype={dtype} or call graph.to(dtype=...) / model.to(...)"
            )
        z = graph.atomic_numbers
        bad = torch.nonzero(z >= self.max_num_elements).flatten()
        if bad.numel():
            i = int(bad[0])
            b = int(graph.batch[i])
            first = int(torch.nonzero(graph.batch == b).flatten()[0])
            raise ValueError(
                f"structure {b}: atom {i - first} has atomic number {int(z[i])}, outside the model's "
                f"max_num_elements={self.max_num_elements}"
            )
        if graph.cutoff > self.cutoff + 1e-9 or (
            self.max_neighbors is not None and graph.max_neighbors is not None and graph.max_neighbors > self.max_neighbors
        ):
            raise ValueError(
                f"graph built with cutoff={graph.cutoff}, max_neighbors={graph.max_neighbors}; this model needs "
                f"cutoff={self.cutoff}, max_neighbors={self.max_neighbors} (use model.cutoff / model.max_neighbors)"
            )

    def prepare(self, graph: AtomicGraph) -> tuple[EdgeContext, torch.Tensor]:
        self.check_graph(graph)
        with stage("edge_context"):
            ctx = self.encoder.context(graph)
        with stage("embedding"):
            return ctx, self.encoder(ctx)

    @property
    def conservative(self) -> bool:
        """Forces are ``-dE/dpos`` (``model.forces: conservative``), not the direct head's."""
        return self.task == "regression" and self.hparams["forces"] == "conservative"

    def decode(self, h: torch.Tensor, ctx: EdgeContext, forces: bool = True) -> dict[str, torch.Tensor]:
        """Heads on trunk features h [N, K, C]; ``forces=False`` skips the direct force head."""
        h = self.norm(h)
        if self.task == "classification":
            return {"logits": self.class_head(h, ctx)}
        if not forces:
            return {"energy": self.scaling.energy(self.energy_head(h, ctx), ctx)}
        energy, direct = self.scaling(self.energy_head(h, ctx), self.force_head(h, ctx), ctx)
        return {"energy": energy, "forces": direct}

    def decode_energy(self, h: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        """Energy head alone on trunk features h [N, K, C]: [B] in training units (float64)."""
        return self.scaling.energy(self.energy_head(self.norm(h), ctx), ctx)

    def trunk_needs_graph(self) -> bool:
        """Whether the trunk must be tracked by autograd for energy derivatives (an explicit
        stack: yes; the DEQ differentiates its fixed point implicitly, so only in training)."""
        return True

    def energy_gradient(self, energy: torch.Tensor, h: torch.Tensor, x: torch.Tensor, ctx: EdgeContext,
                        disp: Displacement, extras: dict[str, Any], create: bool) -> list[torch.Tensor]:
        """``dE/dpos`` [N, 3] (and ``dE/d(strain)`` [B, 3, 3] when ``disp`` has a strain), in
        training units, by autograd through the trunk. With ``create`` the results keep their
        graph, so a loss on them trains the parameters (double backward)."""
        return list(torch.autograd.grad(energy.sum(), disp.leaves(), create_graph=create))

    def decode_correction(self, h: torch.Tensor, ctx: EdgeContext) -> dict[str, torch.Tensor]:
        """Heads on one fixed-point correction state (training only); see DEQuiformer."""
        return self.decode(h, ctx)

    def trunk(self, x: torch.Tensor, ctx: EdgeContext, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def forward(self, graph: AtomicGraph, grad_forces: bool = False, stress: bool = False,
                **kwargs: Any) -> dict[str, Any]:
        """Outputs for a batch of graphs, in training units: ``energy`` [B] (float64), ``forces``
        [N, 3] (the direct head's, or ``-dE/dpos`` for a conservative model), solver extras.

        ``grad_forces`` adds ``"grad_forces"`` = -dE/dpos [N, 3] whatever the force mode;
        ``stress`` adds ``"stress"`` = (1/V) dE/d(strain) [B, 3, 3] (energy unit / A^3, ASE sign
        convention; every structure must be 3D-periodic). Derivatives are taken with respect to
        fresh leaves (``graph.pos`` is left untouched) and, in training mode with grad enabled,
        keep their graph so losses on them train the parameters. Under ``torch.no_grad`` they
        are computed all the same and returned detached.
        """
        derivatives = grad_forces or stress or self.conservative
        if not derivatives:
            ctx, x = self.prepare(graph)
            with stage("trunk"):
                h, extras = self.trunk(x, ctx, **kwargs)
            with stage("heads"):
                out: dict[str, Any] = self.decode(h, ctx)
            return self._finish(out, extras, ctx)
        grad_mode = torch.is_grad_enabled()
        create = self.training and grad_mode
        with torch.enable_grad():
            disp = displace(graph, stress=stress)
            ctx, x = self.prepare(disp.graph)
            with torch.set_grad_enabled(grad_mode or self.trunk_needs_graph()), stage("trunk"):
                h, extras = self.trunk(x, ctx, **kwargs)
            with stage("heads"):
                out = self.decode(h, ctx, forces=not self.conservative)
            with stage("energy_gradient"):
                grads = self.energy_gradient(out["energy"], h, x, ctx, disp, extras, create)
        minus_grad = -grads[0].to(graph.pos.dtype)
        if self.conservative:
            out["forces"] = minus_grad
        if grad_forces:
            out["grad_forces"] = minus_grad
        if stress:
            out["stress"] = stress_from_strain_gradient(grads[1], graph.cell)
        out = self._finish(out, extras, ctx)
        if not grad_mode:
            out = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
        return out

    def _finish(self, out: dict[str, Any], extras: dict[str, Any], ctx: EdgeContext) -> dict[str, Any]:
        """Decode the fixed-point correction states (training) and merge the trunk's extras."""
        corrections = extras.pop("correction_states", None)
        if corrections:
            out["correction"] = [self.decode_correction(s, ctx) for s in corrections]
        out.update(extras)
        return out
