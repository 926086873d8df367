"""Batched MD through TorchSim against one-by-one ASE calls: structure-steps per second.

``S`` copies of one molecule (each rattled differently) run ``steps`` NVE steps twice: once one
system after the other through ASE's VelocityVerlet and a ``DEQCalculator`` per system, once all
together through TorchSim's NVE integrator and one ``DEQTorchSimModel`` (one model call per step
for every system; each DEQ system keeps its own warm start). Both use the same model, tolerances
and threads; the first (cold) call is included in both. Needs the ``torchsim`` extra.

Rows: ``checkpoint``, ``mode`` (``ase_one_by_one`` | ``torchsim_batched``), ``systems``,
``atoms`` (per system), ``steps``, ``seconds``, ``structure_steps_per_s``, ``solver_steps``
(mean layer-block evaluations per system and step, DEQ only).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

DEFAULT_SYSTEMS = (1, 4, 16)


def _systems(molecule: Atoms, count: int, seed: int) -> list[Atoms]:
    out = []
    for i in range(count):
        atoms = molecule.copy()
        atoms.calc = None
        atoms.rattle(0.02, seed=seed + i)
        out.append(atoms)
    return out


def _ase_one_by_one(model: Any, systems: list[Atoms], steps: int, dt_fs: float, temperature_k: float,
                    tol: float, reuse_tol: float | None, dtype: str, device: str, seed: int) -> dict[str, Any]:
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ..calculator import DEQCalculator
    from ..simulate.md import init_velocities

    solver_steps = []
    start = time.perf_counter()
    for i, atoms in enumerate(systems):
        calc = DEQCalculator(model, device=device, tol=tol, reuse_tol=reuse_tol, dtype=dtype)
        atoms.calc = calc
        init_velocities(atoms, temperature_k, seed + i)
        dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
        dyn.attach(lambda c=calc: solver_steps.append(c.stats["solver_steps"]), interval=1)
        dyn.run(steps)
    return {"seconds": time.perf_counter() - start, "solver_steps": float(np.mean(solver_steps))}


def _torchsim_batched(model: Any, systems: list[Atoms], steps: int, dt_fs: float, temperature_k: float,
                      tol: float, reuse_tol: float | None, dtype: str, device: str, seed: int) -> dict[str, Any]:
    import torch
    import torch_sim as ts

    from ..torchsim import DEQTorchSimModel

    torch.manual_seed(seed)
    tdtype = getattr(torch, dtype)
    tsm = DEQTorchSimModel(model, device=device, dtype=tdtype, tol=tol, reuse_tol=reuse_tol)
    state = ts.io.atoms_to_state(systems, torch.device(device), tdtype)
    start = time.perf_counter()
    ts.integrate(system=state, model=tsm, integrator=ts.nve, n_steps=steps, temperature=temperature_k,
                 timestep=dt_fs * 1e-3)  # TorchSim's metal units: ps
    return {"seconds": time.perf_counter() - start, "solver_steps": tsm.total_solver_steps / tsm.system_evaluations}


def run_batched_benchmark(checkpoints: dict[str, str], molecule: Atoms, systems: Sequence[int] = DEFAULT_SYSTEMS,
                          steps: int = 10, dt_fs: float = 0.5, temperature_k: float = 300.0, tol: float = 1e-4,
                          reuse_tol: float | None = None, dtype: str = "float32", device: str = "cpu",
                          threads: int | None = 1, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Every (checkpoint, systems, mode) row and the batched / one-by-one throughput ratios."""
    import torch
    from tqdm.auto import tqdm

    from ..train.checkpoint import load_model

    if threads:
        torch.set_num_threads(int(threads))
    jobs = [(label, count, mode) for label in checkpoints for count in systems
            for mode in ("ase_one_by_one", "torchsim_batched")]
    runners = {"ase_one_by_one": _ase_one_by_one, "torchsim_batched": _torchsim_batched}
    models = {label: load_model(path, device=device) for label, path in checkpoints.items()}
    rows = []
    for label, count, mode in tqdm(jobs, desc="bench batched", unit="case", disable=not progress):
        model = models[label]
        result = runners[mode](model, _systems(molecule, count, seed), steps, dt_fs, temperature_k, tol, reuse_tol,
                               dtype, device, seed)
        rows.append({"checkpoint": label, "mode": mode, "systems": count, "atoms": len(molecule), "steps": steps,
                     "seconds": result["seconds"], "structure_steps_per_s": count * steps / result["seconds"],
                     "solver_steps": result["solver_steps"] if model.is_implicit else None})
    ratios = []
    for label in checkpoints:
        for count in systems:
            at = {r["mode"]: r for r in rows if r["checkpoint"] == label and r["systems"] == count}
            ratios.append({"checkpoint": label, "systems": count, "batched_vs_one_by_one":
                           at["torchsim_batched"]["structure_steps_per_s"] / at["ase_one_by_one"]["structure_steps_per_s"]})
    return {"rows": rows, "ratios": ratios, "steps": steps, "dt_fs": dt_fs, "tol": tol, "reuse_tol": reuse_tol,
            "dtype": dtype, "device": device, "threads": threads,
            "units": {"structure_steps_per_s": "MD steps of one system per second", "seconds": "s"}}


def plot_batched(report: dict[str, Any], path: str | Path) -> Path:
    """Structure-steps per second against the number of systems, one line per checkpoint and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import plot_series, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plot_series(ax, report["rows"], "systems", "structure_steps_per_s", ("checkpoint", "mode"))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("systems")
    ax.set_ylabel("structure MD steps per second")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
