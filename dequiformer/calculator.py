"""ASE calculator for DEQuiformer and EquiformerV2 models, with fixed-point reuse.

The calculator is thin: it builds an ``AtomicGraph``, calls the model, converts units to
eV and eV/A, and keeps the previous fixed point as the next call's starting guess.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from .data.graph import AtomicGraph
from .data.units import energy_factor, length_factor
from .deq.warm_start import WarmStartStore


class DEQCalculator(Calculator):
    """ASE calculator (energies in eV, forces in eV/A whatever the training units).

    Args:
        model_or_checkpoint: a model from ``build_model`` / ``load_model`` or a checkpoint path.
        device: torch device.
        fp_reuse: start each solve from the previous call's fixed point (DEQ models only).
        tol: relative residual of a cold solve.
        reuse_tol: relative residual of a warm-started solve.
        dtype: ``"float32"`` or ``"float64"``.

    After each calculation ``calc.stats`` holds ``solver_steps`` (layer-block evaluations:
    per-graph steps times blocks per layer for a DEQ, ``num_layers`` for an explicit model),
    ``residual``, ``reused``, ``converged`` and ``seconds``. The warm start is dropped when
    the number or species of atoms change (and after ``reset()``).
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(
        self,
        model_or_checkpoint: torch.nn.Module | str | Path,
        device: str = "cpu",
        fp_reuse: bool = True,
        tol: float = 1e-4,
        reuse_tol: float = 1e-1,
        dtype: str = "float32",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(model_or_checkpoint, (str, Path)):
            from .train.checkpoint import load_model

            model = load_model(model_or_checkpoint)
        else:
            model = model_or_checkpoint
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        self.dtype = getattr(torch, dtype)
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if getattr(self.model, "task", "regression") != "regression":
            raise ValueError("DEQCalculator needs an energy/force model (task: regression)")
        self.is_deq = hasattr(self.model, "implicit_layer")
        self.fp_reuse = bool(fp_reuse) and self.is_deq
        self.tol, self.reuse_tol = float(tol), float(reuse_tol)
        units = self.model.units
        self.energy_to_ev = energy_factor(units["energy"], "eV")
        self.force_to_ev_per_a = self.energy_to_ev / length_factor(units["length"], "Angstrom")
        self.store = WarmStartStore()
        self.stats: dict[str, Any] = {}

    def reset(self) -> None:
        super().reset()
        self.store.reset()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        start = time.perf_counter()
        graph = AtomicGraph.from_atoms(
            self.atoms, cutoff=self.model.cutoff, max_neighbors=self.model.max_neighbors,
            dtype=self.dtype, device=self.device,
        )
        kwargs: dict[str, Any] = {}
        z0 = None
        if self.is_deq:
            if self.fp_reuse:
                z0 = self.store.get("system", self.atoms.numbers, on_mismatch="reset")
            kwargs = {"z0": z0, "tol": self.reuse_tol if z0 is not None else self.tol}
        with torch.no_grad():
            out = self.model(graph, **kwargs)
        if self.fp_reuse:
            self.store.put("system", out["fixed_point"], self.atoms.numbers)
        energy = float(out["energy"][0]) * self.energy_to_ev
        forces = out["forces"].detach().cpu().double().numpy() * self.force_to_ev_per_a
        self.results = {"energy": energy, "free_energy": energy, "forces": np.ascontiguousarray(forces)}
        stats = out["solver"]
        blocks = len(self.model.blocks) if self.is_deq else 1
        self.stats = {
            "solver_steps": int(stats.steps[0]) * blocks,
            "residual": float(stats.residual[0]),
            "converged": bool(stats.converged[0]),
            "reused": z0 is not None,
            "seconds": time.perf_counter() - start,
        }
