"""Relaxation benchmark (the DEQuiformer paper's relaxation table).

Each start structure is relaxed with each model in each mode; a DEQ checkpoint gives five
rows (``deq_cold``: no reuse; ``deq_reuse``: the last fixed point reused, solved to ``tol``;
``deq_reuse_relaxed``: reused and solved to the relaxed ``reuse_tol``; ``deq_predictor``:
extrapolated from the last three fixed points, solved to ``tol``; ``deq_force_scaled``: reused,
the tolerance following the forces from the relaxed ``reuse_tol`` down to ``tol`` as fmax falls
to its target, see :func:`~dequiformer.simulate.relax.run_relaxation`), an explicit EquiformerV2
one (``explicit``). Per row: wall time per relaxation (s), optimiser steps, solver steps
(layer-block evaluations) per force call, final fmax (eV/A), the fraction converged to fmax,
unconverged solves, and, where the data has labels, the energy MAE per system (eV) and the force
MAE (eV/A, atoms free to move) on the start structures and the error of the final energy against
the data's own relaxed energy (the last frame of each ``sid``: for the EMT data, EMT's relaxed
energy). Each row also keeps the fmax-against-wall-time trace of its first system and a
``systems`` list (per start structure: seconds, optimiser steps, converged, final fmax and energy).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase.constraints import FixAtoms

from ..calculator import DEQCalculator
from ..data.units import energy_factor, length_factor
from ..rundir import atomic_output
from .relax import OPTIMIZERS, run_relaxation
from .structures import open_dataset

MODES = ("explicit", "deq_cold", "deq_reuse", "deq_reuse_relaxed", "deq_predictor", "deq_force_scaled")
ROW_UNITS = {"final_energy_mae_ev": "eV (per system, against the data's relaxed energy)",
             "seconds_mean": "s", "seconds_std": "s", "solver_steps_mean": "layer-block evaluations per force call",
             "solver_steps_std": "layer-block evaluations per force call", "final_fmax_mean": "eV/A",
             "energy_mae_ev": "eV (per system)", "forces_mae_ev_per_a": "eV/A"}


@dataclass
class StartStructure:
    """A start structure (``ase.Atoms``, constraints set) with its labels in eV and eV/A (or None)
    and, where the data holds its relaxation, the energy of the relaxation's last frame."""

    atoms: Any
    energy_ev: float | None
    forces_ev_per_a: np.ndarray | None
    source_index: int
    relaxed_energy_ev: float | None = None
    name: str | None = None


def start_structures(path: str | Path, n_systems: int, progress: bool = True) -> list[StartStructure]:
    """Up to ``n_systems`` start structures from ``path``.

    OC20 LMDB (and any data whose frames carry a ``sid``): the first frame met of each
    ``sid``, in file order, and as its relaxed energy that of the frame of the same ``sid`` with
    the highest ``fid`` (the whole file is scanned); otherwise the first ``n_systems`` frames.
    ``fixed`` atoms become ``FixAtoms``. Labels are converted to eV and eV/A with the data set's
    units.
    """
    from tqdm import tqdm

    dataset = open_dataset(path)
    if dataset is None:
        raise ValueError(f"{path}: not a data set file the readers know (npz, OC20 LMDB, ASE db, extxyz)")
    if n_systems < 1:
        raise ValueError(f"need n_systems >= 1, got {n_systems}")
    e_factor = energy_factor(dataset.units.get("energy", "eV"), "eV")
    f_factor = e_factor / length_factor(dataset.units.get("length", "Angstrom"), "Angstrom")
    out: dict[Any, StartStructure] = {}
    last: dict[Any, tuple[int, float | None]] = {}  # sid -> (highest fid, its energy in eV)
    bar = tqdm(total=len(dataset), desc="start structures", unit="frame", disable=not progress)
    for i in range(len(dataset)):
        frame = dataset[i]
        bar.update(1)
        sid = frame.info.get("sid")
        energy = None if frame.energy is None else float(frame.energy) * e_factor
        if sid is not None and sid in out:
            fid = int(frame.info.get("fid", 0))
            if fid > last[sid][0]:
                last[sid] = (fid, energy)
            continue
        if len(out) == n_systems:
            if sid is None:
                break
            continue  # keep scanning for the relaxed frames of the systems already taken
        atoms = frame.to_atoms()
        atoms.calc = None
        key = sid if sid is not None else ("frame", i)
        out[key] = StartStructure(
            atoms=atoms, energy_ev=energy,
            forces_ev_per_a=None if frame.forces is None else np.asarray(frame.forces, dtype=float) * f_factor,
            source_index=i, name=frame.info.get("system"))
        last[key] = (int(frame.info.get("fid", 0)), energy)
    bar.close()
    for key, start in out.items():
        if key in last and last[key][0] > 0:  # only a frame after the start is a relaxed one
            start.relaxed_energy_ev = last[key][1]
    return list(out.values())


def modes_for(model: Any) -> list[str]:
    """Benchmark modes of a model: five for a DEQ, ``explicit`` otherwise."""
    return list(MODES[1:]) if model.is_implicit else ["explicit"]


def make_calculator(model: Any, mode: str, tol: float, reuse_tol: float, dtype: str, device: str) -> DEQCalculator:
    """The calculator of a benchmark mode (see :data:`MODES`)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {list(MODES)}")
    fp_reuse = mode in ("deq_reuse", "deq_reuse_relaxed", "deq_predictor", "deq_force_scaled")
    solve_tol = reuse_tol if mode == "deq_reuse_relaxed" else tol
    return DEQCalculator(model, device=device, fp_reuse=fp_reuse, tol=tol, reuse_tol=solve_tol, dtype=dtype,
                         predictor=3 if mode == "deq_predictor" else 1)


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
    e_err, f_err, final_err, unconverged = [], [], [], 0
    trace, per_system = None, []
    for start in tqdm(starts, desc=f"{label} {mode}", unit="system", disable=not progress):
        calc.reset()
        atoms = start.atoms.copy()
        scaled = (tol, reuse_tol) if mode == "deq_force_scaled" else None
        result = run_relaxation(atoms, calc, optimizer=optimizer, fmax=fmax, steps=steps, force_scaled_tol=scaled)
        seconds.append(result.seconds)
        solver_steps.extend(result.solver_steps)
        final_fmax.append(result.final_fmax)
        opt_steps.append(len(result.rows) - 1)
        converged.append(result.converged)
        summary = result.summary()
        unconverged += summary["unconverged_solves"]
        per_system.append({"system": start.name or f"frame {start.source_index}", "seconds": result.seconds,
                           "optimizer_steps": summary["steps"], "converged": bool(result.converged),
                           "final_fmax": result.final_fmax, "final_energy_ev": summary["final_energy_ev"],
                           "reference_relaxed_energy_ev": start.relaxed_energy_ev})
        if trace is None:
            trace = {"system": start.name or f"frame {start.source_index}",
                     "elapsed_s": [float(r["elapsed_s"]) for r in result.rows],
                     "fmax": [float(r["fmax_eV_per_A"]) for r in result.rows]}
        if start.relaxed_energy_ev is not None:
            final_err.append(abs(float(result.rows[-1]["E_pot_eV"]) - start.relaxed_energy_ev))
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
        "final_energy_mae_ev": float(np.mean(final_err)) if final_err else None,
        "unconverged_solves": int(unconverged),
        "trace_first_system": trace,
        "systems": per_system,
        "fp_reuse": bool(calc.fp_reuse),
        "tol": float(tol) if mode != "explicit" else None,
        "reuse_tol": (float(reuse_tol) if mode == "deq_reuse_relaxed" else float(tol)) if calc.fp_reuse else None,
        "predictor": calc.predictor.history if calc.fp_reuse else None,
        "force_scaled_tol": [float(tol), float(reuse_tol)] if mode == "deq_force_scaled" else None,
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
        "MAEs are against the data's labels on the start structures (forces on free atoms); the final-energy "
        "error is against the data's own relaxed energy (last frame of each system).",
        "",
        "| model | mode | s / system | solver steps / step | optimiser steps | final fmax (eV/A) | converged "
        "| unconverged solves | energy MAE (eV) | force MAE (eV/A) | final energy error (eV) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {model_label(r['model'])} | {r['mode']} | {_fmt(r['seconds_mean'])} ± {_fmt(r['seconds_std'])} | "
            f"{_fmt(r['solver_steps_mean'])} ± {_fmt(r['solver_steps_std'])} | {_fmt(r.get('optimizer_steps_mean'))} | "
            f"{_fmt(r['final_fmax_mean'])} | {_fmt(r.get('converged_fraction'), '.0%')} | "
            f"{_fmt(r.get('unconverged_solves'), 'd')} | {_fmt(r['energy_mae_ev'])} | {_fmt(r['forces_mae_ev_per_a'])} | "
            f"{_fmt(r.get('final_energy_mae_ev'))} |")
    return "\n".join(lines) + "\n"


def plot_rows(result: dict[str, Any], path: str | Path) -> Path:
    """Seconds per system and solver steps per step (bars with std), and fmax against wall time
    for the first system in each row (log scale), as one PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..bench.figures import save_figure

    rows = result["rows"]
    labels = [f"{model_label(r['model'])}\n{r['mode']}" for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 1.6 * len(rows) + 6), 4.2))
    for ax, key, title in ((axes[0], "seconds", "seconds per system"),
                           (axes[1], "solver_steps", "solver steps per relaxation step")):
        mean = [r[f"{key}_mean"] or 0.0 for r in rows]
        std = [r[f"{key}_std"] or 0.0 for r in rows]
        ax.bar(x, mean, yerr=std, capsize=3, color=[f"C{MODES.index(r['mode'])}" for r in rows])
        ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    ax = axes[2]
    for i, r in enumerate(rows):
        trace = r.get("trace_first_system")
        if trace:
            ax.plot(trace["elapsed_s"], trace["fmax"], marker=".", color=f"C{MODES.index(r['mode'])}",
                    linestyle=("-", "--", ":", "-.")[i % 4], label=labels[i].replace("\n", " "))
    ax.axhline(result["fmax"], color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("wall time (s)")
    ax.set_ylabel("fmax (eV/A)")
    first = next((r["trace_first_system"]["system"] for r in rows if r.get("trace_first_system")), "")
    ax.set_title(f"first system: {first}", fontsize=9)
    ax.legend(fontsize=6)
    fig.suptitle(f"relaxation benchmark: {result['n_systems']} systems, {result['optimizer']}, fmax {result['fmax']}")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(result: dict[str, Any], report_dir: str | Path) -> dict[str, Path]:
    """Write ``relax_bench.md`` and ``relax_bench.png`` into ``report_dir`` (atomically)."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    md = report_dir / "relax_bench.md"
    with atomic_output(md) as tmp:
        tmp.write_text(markdown_table(result))
    return {"markdown": md, "plot": plot_rows(result, report_dir / "relax_bench.png")}
