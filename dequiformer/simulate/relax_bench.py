"""Relaxation benchmark (the DEQuiformer paper's relaxation table).

Each start structure is relaxed with each model in each mode; a DEQ checkpoint gives three
rows (``deq_cold``: no reuse; ``deq_reuse``: reuse solved to ``tol``; ``deq_reuse_relaxed``:
reuse solved to the relaxed ``reuse_tol``), an explicit EquiformerV2 one (``explicit``).
Per row: wall time per relaxation (s), solver steps (layer-block evaluations) per force
call, final fmax (eV/A), and, where the data has labels, the energy MAE per system (eV) and
the force MAE (eV/A, atoms free to move) on the start structures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase.constraints import FixAtoms

from ..calculator import DEQCalculator
from ..data.units import energy_factor, length_factor
from .relax import OPTIMIZERS, run_relaxation
from .structures import open_dataset

MODES = ("explicit", "deq_cold", "deq_reuse", "deq_reuse_relaxed")
ROW_UNITS = {"seconds_mean": "s", "seconds_std": "s", "solver_steps_mean": "layer-block evaluations per force call",
             "solver_steps_std": "layer-block evaluations per force call", "final_fmax_mean": "eV/A",
             "energy_mae_ev": "eV (per system)", "forces_mae_ev_per_a": "eV/A"}


@dataclass
class StartStructure:
    """A start structure (``ase.Atoms``, constraints set) with its labels in eV and eV/A (or None)."""

    atoms: Any
    energy_ev: float | None
    forces_ev_per_a: np.ndarray | None
    source_index: int


def start_structures(path: str | Path, n_systems: int, progress: bool = True) -> list[StartStructure]:
    """Up to ``n_systems`` start structures from ``path``.

    OC20 LMDB (and any data whose frames carry a ``sid``): the first frame met of each
    ``sid``, in file order; otherwise the first ``n_systems`` frames. ``fixed`` atoms become
    ``FixAtoms``. Labels are converted to eV and eV/A with the data set's units.
    """
    from tqdm import tqdm

    dataset = open_dataset(path)
    if dataset is None:
        raise ValueError(f"{path}: not a data set file the readers know (npz, OC20 LMDB, ASE db, extxyz)")
    if n_systems < 1:
        raise ValueError(f"need n_systems >= 1, got {n_systems}")
    e_factor = energy_factor(dataset.units.get("energy", "eV"), "eV")
    f_factor = e_factor / length_factor(dataset.units.get("length", "Angstrom"), "Angstrom")
    out: list[StartStructure] = []
    seen: set = set()
    bar = tqdm(total=n_systems, desc="start structures", unit="system", disable=not progress)
    for i in range(len(dataset)):
        frame = dataset[i]
        sid = frame.info.get("sid")
        if sid is not None:
            if sid in seen:
                continue
            seen.add(sid)
        atoms = frame.to_atoms()
        atoms.calc = None
        out.append(StartStructure(
            atoms=atoms,
            energy_ev=None if frame.energy is None else float(frame.energy) * e_factor,
            forces_ev_per_a=None if frame.forces is None else np.asarray(frame.forces, dtype=float) * f_factor,
            source_index=i,
        ))
        bar.update(1)
        if len(out) == n_systems:
            break
    bar.close()
    return out


def modes_for(model: Any) -> list[str]:
    """Benchmark modes of a model: three for a DEQ, ``explicit`` otherwise."""
    return ["deq_cold", "deq_reuse", "deq_reuse_relaxed"] if hasattr(model, "implicit_layer") else ["explicit"]


def make_calculator(model: Any, mode: str, tol: float, reuse_tol: float, dtype: str, device: str) -> DEQCalculator:
    """The calculator of a benchmark mode (see :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
    fp_reuse = mode in ("deq_reuse", "deq_reuse_relaxed")
    solve_tol = reuse_tol if mode == "deq_reuse_relaxed" else tol
    return DEQCalculator(model, device=device, fp_reuse=fp_reuse, tol=tol, reuse_tol=solve_tol, dtype=dtype)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not len(values):
        return None, None
    return float(np.mean(values)), float(np.std(values))


def bench_row(model: Any, label: str, mode: str, starts: Sequence[StartStructure], optimizer: str, fmax: float,
              steps: int, tol: float, reuse_tol: float, dtype: str, device: str, progress: bool) -> dict[str, Any]:
    """Relax every start structure with one model in one mode; one table row."""
    from tqdm import tqdm

    calc = make_calculator(model, mode, tol, reuse_tol, dtype, device)
    seconds, solver_steps, final_fmax, opt_steps, converged = [], [], [], [], []
    e_err, f_err = [], []
    for start in tqdm(starts, desc=f"{label} {mode}", unit="system", disable=not progress):
        calc.reset()
        atoms = start.atoms.copy()
        result = run_relaxation(atoms, calc, optimizer=optimizer, fmax=fmax, steps=steps)
        seconds.append(result.seconds)
        solver_steps.extend(result.solver_steps)
        final_fmax.append(result.final_fmax)
        opt_steps.append(len(result.rows) - 1)
        converged.append(result.converged)
        if start.energy_ev is not None:
            e_err.append(abs(float(result.rows[0]["E_pot_eV"]) - start.energy_ev))
        if start.forces_ev_per_a is not None and result.initial_forces is not None:
            free = np.ones(len(atoms), dtype=bool)
            for constraint in start.atoms.constraints:
                if isinstance(constraint, FixAtoms):
                    free[constraint.get_indices()] = False
            f_err.append(np.abs(result.initial_forces[free] - start.forces_ev_per_a[free]).reshape(-1))
    s_mean, s_std = _mean_std(seconds)
    k_mean, k_std = _mean_std(solver_steps)
    return {
        "model": label,
        "mode": mode,
        "seconds_mean": s_mean,
        "seconds_std": s_std,
        "solver_steps_mean": k_mean,
        "solver_steps_std": k_std,
        "final_fmax_mean": float(np.mean(final_fmax)),
        "energy_mae_ev": float(np.mean(e_err)) if e_err else None,
        "forces_mae_ev_per_a": float(np.mean(np.concatenate(f_err))) if f_err else None,
        "optimizer_steps_mean": float(np.mean(opt_steps)),
        "converged_fraction": float(np.mean(converged)),
        "fp_reuse": bool(calc.fp_reuse),
        "tol": float(tol) if mode != "explicit" else None,
        "reuse_tol": (float(reuse_tol) if mode == "deq_reuse_relaxed" else float(tol)) if calc.fp_reuse else None,
    }


def run_relax_bench(
    checkpoints: Sequence[str | Path],
    data: str | Path,
    n_systems: int = 100,
    steps: int = 100,
    optimizer: str = "lbfgs",
    fmax: float = 0.05,
    tol: float = 1e-4,
    reuse_tol: float = 1e-1,
    dtype: str = "float32",
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """The benchmark over all checkpoints; returns the ``relax-bench`` JSON object.

    Args:
        checkpoints: DEQuiformer and/or EquiformerV2 checkpoint files.
        data: start structures (see :func:`start_structures`).
        n_systems: number of start structures.
        steps: maximum optimiser steps per relaxation.
        optimizer: ``lbfgs``, ``bfgs`` or ``fire``.
        fmax: convergence threshold (eV/A).
        tol / reuse_tol: cold and relaxed warm-start solver tolerances (relative residual).
    """
    import torch

    from ..train.checkpoint import load_model

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {list(OPTIMIZERS)}")
    models = [(str(path), load_model(path)) for path in checkpoints]  # fail on a bad file before any work
    starts = start_structures(data, n_systems, progress=progress)
    rows = []
    for path, model in models:
        warm_up = make_calculator(model, modes_for(model)[0], tol, reuse_tol, dtype, device)
        warm_up.get_potential_energy(starts[0].atoms.copy())  # one-time costs out of the timings
        for mode in modes_for(model):
            rows.append(bench_row(model, path, mode, starts, optimizer, fmax, steps, tol, reuse_tol, dtype, device,
                                  progress))
    return {"rows": rows, "n_systems": len(starts), "optimizer": optimizer, "fmax": float(fmax), "steps": int(steps),
            "data": str(data), "tol": float(tol), "reuse_tol": float(reuse_tol), "dtype": dtype, "device": str(device),
            "threads": torch.get_num_threads(), "units": ROW_UNITS}


def model_label(path: str) -> str:
    """Short name of a checkpoint for tables: ``run/best.pt`` rather than the full path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown document (settings line + table)."""
    lines = [
        "# Relaxation benchmark",
        "",
        f"{result['n_systems']} systems from `{result.get('data', '')}`, {result['optimizer'].upper()}, "
        f"fmax {result['fmax']} eV/A, at most {result['steps']} steps; solver tol {result.get('tol')}, "
        f"relaxed reuse tol {result.get('reuse_tol')}. Solver steps are layer-block evaluations per force call; "
        "MAEs are against the data's labels on the start structures (forces on free atoms).",
        "",
        "| model | mode | s / system | solver steps / step | optimiser steps | final fmax (eV/A) | converged "
        "| energy MAE (eV) | force MAE (eV/A) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {model_label(r['model'])} | {r['mode']} | {_fmt(r['seconds_mean'])} ± {_fmt(r['seconds_std'])} | "
            f"{_fmt(r['solver_steps_mean'])} ± {_fmt(r['solver_steps_std'])} | {_fmt(r.get('optimizer_steps_mean'))} | "
            f"{_fmt(r['final_fmax_mean'])} | {_fmt(r.get('converged_fraction'), '.0%')} | "
            f"{_fmt(r['energy_mae_ev'])} | {_fmt(r['forces_mae_ev_per_a'])} |")
    return "\n".join(lines) + "\n"


def plot_rows(result: dict[str, Any], path: str | Path) -> Path:
    """Bar plot of seconds per system and solver steps per step (with std error bars), atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{model_label(r['model'])}\n{r['mode']}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.6 * len(rows) + 2), 4.0))
    for ax, key, title in ((axes[0], "seconds", "seconds per system"),
                           (axes[1], "solver_steps", "solver steps per relaxation step")):
        mean = [r[f"{key}_mean"] or 0.0 for r in rows]
        std = [r[f"{key}_std"] or 0.0 for r in rows]
        ax.bar(x, mean, yerr=std, capsize=3, color=[f"C{MODES.index(r['mode'])}" for r in rows])
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    fig.suptitle(f"relaxation benchmark: {result['n_systems']} systems, {result['optimizer']}, fmax {result['fmax']}")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def write_report(result: dict[str, Any], report_dir: str | Path) -> dict[str, Path]:
    """Write ``relax_bench.md`` and ``relax_bench.png`` into ``report_dir`` (atomically)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    md = report_dir / "relax_bench.md"
    tmp = md.with_name(f".{md.name}.{os.getpid()}.tmp")
    tmp.write_text(markdown_table(result))
    os.replace(tmp, md)
    return {"markdown": md, "plot": plot_rows(result, report_dir / "relax_bench.png")}
