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
from .encoder import Encoder
from .heads import ClassificationHead, EnergyHead, ForceHead, OutputScaling
from .hparams import resolve


class ForceFieldModel(torch.nn.Module):
    """Base class. ``model(graph)`` returns ``{"energy": [B], "forces": [N, 3], ...}`` in the
    training units recorded in ``model.hparams`` (and ``"logits"`` [B, classes] for
    classification)."""

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
    def units(self) -> dict[str, str]:
        return {"energy": self.hparams["energy_units"], "length": self.hparams["length_units"]}

    def dropout_modules(self) -> list[RecurrentDropout]:
        return [m for m in self.modules() if isinstance(m, RecurrentDropout)]

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
        ctx = self.encoder.context(graph)
        return ctx, self.encoder(ctx)

    def decode(self, h: torch.Tensor, ctx: EdgeContext) -> dict[str, torch.Tensor]:
        """Heads on trunk features h [N, K, C]."""
        h = self.norm(h)
        if self.task == "classification":
            return {"logits": self.class_head(h, ctx)}
        energy, forces = self.scaling(self.energy_head(h, ctx), self.force_head(h, ctx), ctx)
        return {"energy": energy, "forces": forces}

    def decode_energy(self, h: torch.Tensor, ctx: EdgeContext) -> torch.Tensor:
        """Energy head alone on trunk features h [N, K, C]: [B] in training units (float64)."""
        return self.scaling.energy(self.energy_head(self.norm(h), ctx), ctx)

    def energy_gradient_forces(self, energy: torch.Tensor, h: torch.Tensor, x: torch.Tensor, ctx: EdgeContext,
                               graph: AtomicGraph, extras: dict[str, Any]) -> torch.Tensor:
        """``-dE/dpos`` [N, 3] (training units). In training mode the result keeps its graph, so
        a loss on it trains the parameters (double backward)."""
        (grad,) = torch.autograd.grad(energy.sum(), graph.pos, create_graph=self.training)
        return -grad.to(graph.pos.dtype)

    def decode_correction(self, h: torch.Tensor, ctx: EdgeContext) -> dict[str, torch.Tensor]:
        """Heads on one fixed-point correction state (training only); see DEQuiformer."""
        return self.decode(h, ctx)

    def trunk(self, x: torch.Tensor, ctx: EdgeContext, **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def forward(self, graph: AtomicGraph, grad_forces: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Outputs for a batch; with ``grad_forces`` also ``"grad_forces"`` = -dE/dpos [N, 3] (needs
        grad mode; sets ``graph.pos.requires_grad``)."""
        if grad_forces:
            if not torch.is_grad_enabled():
                raise RuntimeError("grad_forces=True needs grad mode (it differentiates the energy)")
            graph.pos.requires_grad_(True)
        ctx, x = self.prepare(graph)
        h, extras = self.trunk(x, ctx, **kwargs)
        out: dict[str, Any] = self.decode(h, ctx)
        if grad_forces:
            out["grad_forces"] = self.energy_gradient_forces(out["energy"], h, x, ctx, graph, extras)
        corrections = extras.pop("correction_states", None)
        if corrections:
            out["correction"] = [self.decode_correction(s, ctx) for s in corrections]
        out.update(extras)
        return out
