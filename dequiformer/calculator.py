"""ASE calculator for DEQuiformer and EquiformerV2 models, with fixed-point reuse.

The calculator is thin: it builds an ``AtomicGraph``, calls the model, converts units to
eV, eV/A and eV/A^3, and keeps the previous fixed point (and, for conservative DEQ models, the
previous adjoint vector) as the next call's starting guess.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .data.graph import AtomicGraph
from .device import resolve_device
from .deq.predictor import FixedPointPredictor, fixed_point_motion
from .deq.secant_memory import SecantMemory
from .inference import OutputUnits, SolveSettings
from .profiling import stage


#: a warm start is dropped when any atom moved further than this since the last call (Angstrom):
#: MD and optimiser steps move atoms by hundredths to tenths of an Angstrom
MAX_JUMP_A = 1.0


class DEQCalculator(Calculator):
    """ASE calculator (energies in eV, forces in eV/A whatever the training units).

    Args:
        model_or_checkpoint: a model from ``build_model`` / ``load_model`` or a checkpoint path.
        device: torch device.
        fp_reuse: start each solve from the previous call's fixed point (DEQ models only).
        tol: relative residual of a cold solve.
        reuse_tol: relative residual of a warm-started solve (default: the model's own
            ``deq.reuse_tol``; a conservative DEQ's sets its NVE energy drift with reuse:
            2.6e-6 eV/atom/ps at 1e-4 and 5.5e-4 at 1e-3 on the demo model, ``bench nve``).
        adjoint_tol: relative residual of the adjoint solve of a conservative DEQ (default: the
            tolerance of the same call's fixed-point solve, ``tol`` cold and ``reuse_tol`` warm:
            an adjoint looser than its fixed point would set the force error alone).
        max_iter: solver iteration cap of each solve (default: the model's ``deq.max_iter``;
            the adjoint keeps ``deq.b_max_iter``).
        predictor: with ``fp_reuse``, how many past fixed points (and adjoints) the next start is
            extrapolated from: 1 reuses the last one, 2 and 3 extrapolate linearly and
            quadratically along the trajectory, falling back to lower orders where the atoms'
            own path does not follow the extrapolation (:class:`~dequiformer.deq.predictor.FixedPointPredictor`).
            Default: the model's ``deq.predictor``, or when that is null 3 for ``reuse_tol <= 1e-3``
            and 1 above. Extrapolation also extrapolates each state's solver error, so on a layer
            that is not contractive it pays only for tight solves: on the session-3 demo DEQ along
            0.5 fs aspirin frames it cut solver steps from 8.6 to 5.6 at ``reuse_tol`` 1e-3 and from
            14.0 to 10.1 at 1e-4, but raised them (and the force error) at 1e-2 and 1e-1.
        correctors: along a trajectory, where the last two fixed points extrapolate linearly, take
            exactly this many damped steps from the extrapolation instead of solving to ``reuse_tol``
            (ASPC, :mod:`dequiformer.deq.corrector`; default: the model's ``deq.correctors``, off
            when null). Needs a contractive layer; implies ``predictor`` 2.
        secant_memory: along a trajectory, Anderson keeps this many secant pairs from one warm solve
            to the next and accepts a step on the predicted residual of its next iterate
            (:mod:`dequiformer.deq.secant_memory`; default: the model's ``deq.secant_memory``; 0 =
            off). Dropped with the warm starts.
        dtype: ``"float32"`` or ``"float64"``.

    Forces are the model's: the direct head's, or ``-dE/dpos`` for a model trained with
    ``model.forces: conservative``. Conservative models also give the stress (ASE sign and Voigt
    conventions, eV/A^3) of structures periodic in all three directions, so they work under
    ``FrechetCellFilter`` and NPT; asking a direct model or a non-periodic structure for stress
    is an error that says so.

    After each calculation ``calc.stats`` holds ``solver_steps`` (layer-block evaluations:
    per-graph steps times blocks per layer for a DEQ, ``num_layers`` for an explicit model),
    ``residual``, ``reused``, ``converged`` and ``seconds``; a conservative DEQ adds
    ``adjoint_steps`` and ``adjoint_residual`` (the adjoint solve ``g = J^T g + dE/dz*``), and
    ``unconverged_calls`` counts calls with an unconverged solve (the first one also warns). The
    warm starts are dropped when the number or species of atoms change, when any atom moved by more
    than ``MAX_JUMP_A`` (1 A) since the last call, and after ``reset()``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(
        self,
        model_or_checkpoint: torch.nn.Module | str | Path,
        device: str = "cpu",
        fp_reuse: bool = True,
        tol: float = 1e-4,
        reuse_tol: float | None = None,
        dtype: str = "float32",
        adjoint_tol: float | None = None,
        predictor: int | None = None,
        max_iter: int | None = None,
        correctors: int | None = None,
        secant_memory: int | None = None,
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
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        if getattr(self.model, "task", "regression") != "regression":
            raise ValueError("DEQCalculator needs an energy/force model (task: regression)")
        self.is_deq = self.model.is_implicit
        self.fp_reuse = bool(fp_reuse) and self.is_deq
        self.conservative = bool(getattr(self.model, "conservative", False))
        self.settings = SolveSettings.for_model(self.model, tol, reuse_tol, adjoint_tol, max_iter, predictor,
                                                correctors, secant_memory)
        self.units = OutputUnits.for_model(self.model)
        self.unconverged_calls = 0  # calls whose fixed-point (or adjoint) solve did not converge
        if not self.conservative:  # instance attribute: ASE asks the instance what it can do
            self.implemented_properties = ["energy", "free_energy", "forces"]
        # the history is tied to the atoms' species, and dropped after a jump of any atom by more
        # than MAX_JUMP_A (a new configuration, not the next step of a trajectory or relaxation)
        self.predictor = FixedPointPredictor(self.settings.predictor, max_jump=MAX_JUMP_A)
        self.secant_memory = (SecantMemory(self.settings.secant_memory)
                              if self.fp_reuse and self.settings.secant_memory else None)
        self.stats: dict[str, Any] = {}

    def get_property(self, name: str, atoms: Any = None, allow_calculation: bool = True) -> Any:
        if name == "stress" and not self.conservative:  # ASE's own message would not say why
            raise PropertyNotImplementedError(
                "stress needs a conservative model (model.forces: conservative); this model's forces come from its "
                "direct head")
        return super().get_property(name, atoms, allow_calculation)

    @property
    def tol(self) -> float:
        return self.settings.tol

    @property
    def reuse_tol(self) -> float:
        return self.settings.reuse_tol

    @reuse_tol.setter
    def reuse_tol(self, value: float) -> None:
        """Change the warm-start tolerance between calls (e.g. with the forces in a relaxation);
        the predictor history is kept."""
        if not float(value) > 0:
            raise ValueError(f"reuse_tol must be > 0, got {value}")
        self.settings = dataclasses.replace(self.settings, reuse_tol=float(value))

    def reset(self) -> None:
        super().reset()
        self.predictor.reset()
        if self.secant_memory is not None:
            self.secant_memory.reset()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        start = time.perf_counter()
        with stage("graph"):
            graph = AtomicGraph.from_atoms(
                self.atoms, cutoff=self.model.cutoff, max_neighbors=self.model.max_neighbors,
                dtype=self.dtype, device=self.device,
            )
        periodic = bool(np.all(self.atoms.pbc))
        if "stress" in properties:
            if not periodic:
                raise PropertyNotImplementedError(
                    f"stress needs a structure periodic in all three directions (pbc={self.atoms.pbc.tolist()})")
        # a conservative model's stress costs one more leaf in the same backward pass: always take it
        # on 3D-periodic structures, as ASE asks for energy, forces and stress one after another
        want_stress = self.conservative and periodic
        coords = torch.as_tensor(self.atoms.positions, dtype=torch.float64) if self.fp_reuse else None
        species = torch.as_tensor(self.atoms.numbers) if self.fp_reuse else None
        guess = self.predictor.predict(coords, labels=species) if self.fp_reuse else {}
        z0 = guess.get("z")
        if z0 is None and self.secant_memory is not None:  # the warm starts were dropped: so are the secants
            self.secant_memory.reset()
        kwargs = self.settings.model_kwargs(self.model, warm=z0 is not None, guess=guess, stress=want_stress,
                                            extrapolated=self.predictor.last_order >= 2, memory=self.secant_memory)
        with torch.no_grad():
            out = self.model(graph, **kwargs)
        motion = {}
        if self.fp_reuse:
            motion = fixed_point_motion(out["fixed_point"], z0, self.predictor.latest("z"))
            self.predictor.record(coords, labels=species, z=out["fixed_point"], adjoint=out.get("adjoint_vector"))
        energy = float(out["energy"][0]) * self.units.energy
        forces = out["forces"].detach().cpu().double().numpy() * self.units.forces
        self.results = {"energy": energy, "free_energy": energy, "forces": np.ascontiguousarray(forces)}
        if want_stress:
            stress = out["stress"][0].detach().cpu().double().numpy() * self.units.stress
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
        stats = out["solver"]
        blocks = self.model.blocks_per_solver_step
        self.stats = {
            "solver_steps": int(stats.steps[0]) * blocks,
            "residual": float(stats.residual[0]),
            "converged": bool(stats.converged[0]),
            "reused": z0 is not None,
            "predictor_order": self.predictor.last_order if z0 is not None else 0,
            "corrected": "correctors" in kwargs,
            "seconds": time.perf_counter() - start,
            **motion,
        }
        if "adjoint" in out:
            self.stats["adjoint_steps"] = int(out["adjoint"].steps[0]) * blocks
            self.stats["adjoint_residual"] = float(out["adjoint"].residual[0])
            self.stats["adjoint_converged"] = bool(out["adjoint"].converged[0])
        if not (self.stats["converged"] and self.stats.get("adjoint_converged", True)):
            if self.unconverged_calls == 0:  # once per calculator: MD would otherwise flood the log
                warnings.warn(
                    f"DEQCalculator: a {'fixed-point' if not self.stats['converged'] else 'adjoint'} solve stopped "
                    f"unconverged (residual {self.stats['residual']:.3g}, steps {self.stats['solver_steps']}); forces "
                    f"carry the solver error. Raise max_iter or loosen tol; calc.stats['unconverged_calls'] counts them",
                    RuntimeWarning, stacklevel=2)
            self.unconverged_calls += 1
        self.stats["unconverged_calls"] = self.unconverged_calls
