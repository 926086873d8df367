"""TorchSim model interface: batched MD and relaxations of many systems in one process.

``DEQTorchSimModel`` wraps a DEQuiformer or EquiformerV2 model as a
``torch_sim.models.interface.ModelInterface`` (the optional extra ``pip install
dequiformer[torchsim]``, package ``torch-sim-atomistic``), so TorchSim's integrators,
optimizers and autobatchers drive it like its MACE, fairchem or orb models. Like the ASE
calculator it is thin: it builds one batched ``AtomicGraph`` per call, calls the model once for
all systems (the DEQ solves one fixed-point problem per system, each stopping at its own
convergence), converts to eV, eV/A and eV/A^3, and keeps each system's fixed point (and adjoint)
as that system's next starting guess.

Warm starts are per system slot of the batch and are dropped when the slot's species change or
any of its atoms moved by more than ``max_jump`` A (TorchSim's autobatchers swap finished
systems out of a batch and new ones in: a new system never inherits another's fixed point).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from torch_sim.models.interface import ModelInterface
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "dequiformer.torchsim needs TorchSim: pip install 'dequiformer[torchsim]' (torch-sim-atomistic)") from exc

from .data.graph import AtomicGraph
from .device import resolve_device
from .deq.predictor import FixedPointPredictor
from .inference import OutputUnits, SolveSettings

__all__ = ["DEQTorchSimModel"]


def _system_slices(graph: AtomicGraph) -> list[slice]:
    """The rows of each graph of a batch (systems are stored one after another)."""
    bounds = torch.cumsum(graph.natoms.cpu(), 0).tolist()
    return [slice(a, e) for a, e in zip([0] + bounds[:-1], bounds)]


class DEQTorchSimModel(ModelInterface):
    """A dequiformer model as a TorchSim ``ModelInterface`` (energies in eV, forces in eV/A,
    stress in eV/A^3 with ASE's sign, whatever the training units).

    Args:
        model_or_checkpoint: a model from ``build_model`` / ``load_model`` or a checkpoint path.
        device: torch device of the model and of the outputs.
        dtype: ``torch.float32`` or ``torch.float64``.
        fp_reuse: start each system's solve from its own last fixed point (DEQ models only).
        tol: relative residual of cold solves.
        reuse_tol: relative residual of warm-started solves (default as in ``DEQCalculator``: the
            model's own ``deq.reuse_tol``). A batch in which any system starts cold is solved to
            ``tol`` throughout (one tolerance per call).
        adjoint_tol: adjoint residual of a conservative DEQ (default: the call's tolerance).
        max_iter: solver iteration cap (default: the model's ``deq.max_iter``).
        predictor: past fixed points each system's start is extrapolated from (1-3; default as
            in ``DEQCalculator``: the model's ``deq.predictor``).
        correctors: ASPC warm starts as in ``DEQCalculator`` (default: the model's
            ``deq.correctors``); used in a call only when every system's start was extrapolated.
        max_jump: a system's warm start is dropped when any atom moved further than this (A).
        compute_stress: give ``stress`` on periodic states (default: for conservative models;
            direct-force models cannot).

    After each call ``self.stats`` holds per-system lists ``solver_steps``, ``residual``,
    ``converged``, ``reused`` (and ``adjoint_steps`` for a conservative DEQ) plus ``seconds``;
    ``calls``, ``system_evaluations`` (systems times calls), ``total_solver_steps`` and
    ``unconverged_systems`` accumulate over calls.
    """

    def __init__(
        self,
        model_or_checkpoint: torch.nn.Module | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        fp_reuse: bool = True,
        tol: float = 1e-4,
        reuse_tol: float | None = None,
        adjoint_tol: float | None = None,
        max_iter: int | None = None,
        predictor: int | None = None,
        correctors: int | None = None,
        max_jump: float = 1.0,
        compute_stress: bool | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model_or_checkpoint, (str, Path)):
            from .train.checkpoint import load_model

            model = load_model(model_or_checkpoint)
        else:
            model = model_or_checkpoint
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if getattr(model, "task", "regression") != "regression":
            raise ValueError("DEQTorchSimModel needs an energy/force model (task: regression)")
        self._device = resolve_device(device)
        self._dtype = dtype
        self.model = model.to(device=self._device, dtype=dtype).eval()
        self.is_deq = self.model.is_implicit
        self.conservative = bool(getattr(self.model, "conservative", False))
        if compute_stress and not self.conservative:
            raise ValueError("compute_stress needs a conservative model (model.forces: conservative); this model's "
                             "forces come from its direct head")
        self._compute_stress = self.conservative if compute_stress is None else bool(compute_stress)
        self._compute_forces = True
        self.fp_reuse = bool(fp_reuse) and self.is_deq
        self.settings = SolveSettings.for_model(self.model, tol, reuse_tol, adjoint_tol, max_iter, predictor,
                                                correctors)
        self.max_jump = float(max_jump)
        self._predictors: list[FixedPointPredictor] = []
        self.units = OutputUnits.for_model(self.model)
        self.calls = 0
        self.system_evaluations = 0
        self.total_solver_steps = 0
        self.unconverged_systems = 0
        self.stats: dict[str, Any] = {}

    def reset(self) -> None:
        """Forget every system's warm start."""
        self._predictors = []

    # ------------------------------------------------------------------ graph
    def _graph(self, positions: torch.Tensor, numbers: torch.Tensor, cells: torch.Tensor, pbc: bool,
               system_idx: torch.Tensor, n_systems: int) -> AtomicGraph:
        """One batched graph (systems in order); neighbour lists are built per system."""
        pos = positions.detach().cpu().double().numpy()
        z = numbers.detach().cpu().numpy()
        sys_np = system_idx.detach().cpu().numpy()
        cells_np = cells.detach().cpu().double().numpy()
        graphs = []
        for s in range(n_systems):
            rows = np.nonzero(sys_np == s)[0]
            if rows.size == 0:
                raise ValueError(f"system {s} of the state has no atoms")
            graphs.append(AtomicGraph.from_arrays(
                pos[rows], z[rows], cells_np[s] if pbc else None, [pbc] * 3, cutoff=self.model.cutoff,
                max_neighbors=self.model.max_neighbors, dtype=self._dtype, device=self._device))
        return graphs[0] if n_systems == 1 else AtomicGraph.collate(graphs)

    # ------------------------------------------------------------ warm starts
    def _warm_starts(self, graph: AtomicGraph, positions: torch.Tensor) -> tuple[dict[str, Any], list[bool]]:
        """Per-system guesses stacked into one ``{"z", "adjoint"}`` for the batch (zeros for systems
        without one) and which systems were warm."""
        n_systems = graph.num_graphs
        while len(self._predictors) < n_systems:
            self._predictors.append(FixedPointPredictor(self.settings.predictor, max_jump=self.max_jump))
        del self._predictors[n_systems:]
        slices = _system_slices(graph)
        guesses = [p.predict(positions[rows], labels=graph.atomic_numbers[rows].cpu())
                   for p, rows in zip(self._predictors, slices)]
        warm = [bool(g) for g in guesses]
        stacked: dict[str, torch.Tensor] = {}
        if any(warm):
            template = next(g for g in guesses if g)
            for name in template:
                parts = [g[name] if name in g else template[name].new_zeros(rows.stop - rows.start,
                                                                             *template[name].shape[1:])
                         for g, rows in zip(guesses, slices)]
                stacked[name] = torch.cat(parts).to(device=self._device, dtype=self._dtype)
        return stacked, warm

    # ---------------------------------------------------------------- forward
    def forward(self, state: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Energies ``[n_systems]`` (eV), forces ``[n_atoms, 3]`` (eV/A) and, for a conservative
        model on a periodic state with ``compute_stress``, stress ``[n_systems, 3, 3]`` (eV/A^3)."""
        start = time.perf_counter()
        get = (lambda k: state[k]) if isinstance(state, dict) else (lambda k: getattr(state, k))
        positions = get("positions")
        numbers = get("atomic_numbers")
        system_idx = state.get("system_idx") if isinstance(state, dict) else state.system_idx
        if system_idx is None:
            system_idx = torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)
        cell = get("cell")
        cells = cell.reshape(-1, 3, 3).mT  # TorchSim stores lattice vectors as columns
        pbc = bool(torch.as_tensor(get("pbc")).all())
        n_systems = int(system_idx.max()) + 1 if positions.shape[0] else 0
        graph = self._graph(positions, numbers, cells, pbc, system_idx, n_systems)
        want_stress = self._compute_stress and pbc
        coords = positions.detach().cpu().double()
        guess, warm = self._warm_starts(graph, coords) if self.fp_reuse else ({}, [False] * n_systems)
        extrapolated = self.fp_reuse and all(p.last_order >= 2 for p in self._predictors[:n_systems])
        call = self.settings.model_kwargs(self.model, warm=all(warm) and n_systems > 0, guess=guess,
                                          stress=want_stress, extrapolated=extrapolated)
        with torch.no_grad():
            out = self.model(graph, **call)
        if self.fp_reuse:
            self._record(graph, coords, out)
        result = {
            "energy": (out["energy"] * self.units.energy).to(positions.dtype).to(positions.device),
            "forces": (out["forces"] * self.units.forces).to(positions.dtype).to(positions.device),
        }
        if want_stress:
            result["stress"] = (out["stress"] * self.units.stress).to(positions.dtype).to(positions.device)
        self._update_stats(out, warm, time.perf_counter() - start)
        return result

    def _record(self, graph: AtomicGraph, coords: torch.Tensor, out: dict[str, Any]) -> None:
        adjoint = out.get("adjoint_vector")
        for p, rows in zip(self._predictors, _system_slices(graph)):
            p.record(coords[rows], labels=graph.atomic_numbers[rows].cpu(), z=out["fixed_point"][rows],
                     adjoint=None if adjoint is None else adjoint[rows])

    def _update_stats(self, out: dict[str, Any], warm: list[bool], seconds: float) -> None:
        self.calls += 1
        self.system_evaluations += len(warm)
        blocks = self.model.blocks_per_solver_step
        stats = out["solver"]
        self.stats = {
            "solver_steps": (stats.steps.cpu() * blocks).tolist(),
            "residual": stats.residual.cpu().tolist(),
            "converged": stats.converged.cpu().tolist(),
            "reused": warm,
            "seconds": seconds,
        }
        self.total_solver_steps += int(sum(self.stats["solver_steps"]))
        converged = stats.converged.cpu()
        if "adjoint" in out:
            self.stats["adjoint_steps"] = (out["adjoint"].steps.cpu() * blocks).tolist()
            converged = converged & out["adjoint"].converged.cpu()
        self.unconverged_systems += int((~converged).sum())
        self.stats["calls"] = self.calls
        self.stats["unconverged_systems"] = self.unconverged_systems
