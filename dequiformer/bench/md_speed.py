"""MD speed against system size: ms per MD step, solver steps and peak memory of the explicit
model and of the DEQ cold, with fixed-point reuse, and with the fixed-point predictor.

Systems are clusters of ``k`` copies of one molecule on a cubic grid (``spacing`` A apart, far
beyond the cutoff, so the work per atom is the molecule's), optionally made periodic with the
grid as the cell. Every case runs a short NVE MD from the same start and velocities; the first
force call (the cold solve) is excluded from the per-step numbers. By default each case runs in
its own process, so ``peak_rss_mb`` is that case's own peak resident memory. With ``repeats`` > 1
the cases of one size run round-robin that many times and each row keeps the median (the list is
in ``ms_per_step_repeats``): on a shared machine the load drifts, and cases measured minutes
apart would otherwise compare different machines.

Rows: ``atoms``, ``periodic``, ``checkpoint`` (label), ``model`` (``explicit`` | ``deq_cold`` |
``deq_reuse`` | ``deq_predictor``), ``ms_per_step``, ``solver_steps`` (layer-block evaluations
per MD step), ``adjoint_steps``, ``peak_rss_mb``, ``model_rss_mb`` (after loading the model).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

#: copies of the molecule per system (aspirin: 21, 168, 567, 1344 atoms)
DEFAULT_COPIES = (1, 8, 27, 64)
#: case -> (fixed-point reuse, predictor history); ``deq_reuse`` runs the calculator's defaults
#: (the checkpoint's own deq.reuse_tol and deq.predictor unless --reuse-tol is given)
CASES = {"explicit": (False, 1), "deq_cold": (False, 1), "deq_reuse": (True, None), "deq_predictor": (True, 3)}


def molecule_grid(molecule: Atoms, copies: int, spacing: float = 9.0, periodic: bool = False) -> Atoms:
    """``copies`` translated copies of ``molecule`` on the smallest cubic grid that holds them,
    ``spacing`` A apart (cell = the grid when ``periodic``)."""
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    side = int(np.ceil(copies ** (1.0 / 3.0) - 1e-9))
    mol = molecule.copy()
    mol.calc = None
    mol.positions -= mol.positions.mean(axis=0)
    out = Atoms()
    for idx in range(copies):
        shift = spacing * np.array(np.unravel_index(idx, (side, side, side)), dtype=float)
        part = mol.copy()
        part.positions += shift
        out += part
    if periodic:
        out.set_cell(np.eye(3) * spacing * side)
        out.positions += spacing / 2
        out.pbc = True
    return out


def steps_for_sizes(steps: int | Sequence[int], copies: Sequence[int]) -> list[int]:
    """MD steps per size: ``steps`` is one count for every size or one per size (same order)."""
    counts = [int(steps)] if isinstance(steps, (int, np.integer)) else [int(s) for s in steps]
    if len(counts) == 1:
        counts = counts * len(copies)
    if len(counts) != len(copies):
        raise ValueError(f"--steps takes one count or one per size: got {len(counts)} counts for {len(copies)} sizes "
                         f"(--copies {' '.join(str(k) for k in copies)})")
    if min(counts) < 1:
        raise ValueError(f"--steps must be >= 1, got {counts}")
    return counts


def _case_worker(args: dict[str, Any]) -> dict[str, Any]:
    """Run one case (in this process or a spawned one) and return its row."""
    import torch

    from ..calculator import DEQCalculator
    from ..simulate.md import run_md
    from ..train.checkpoint import load_model
    from ..memory import current_rss_mb, peak_rss_mb

    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    model = load_model(args["path"], device=args["device"])
    model_rss = current_rss_mb()
    reuse, history = CASES[args["case"]]
    calc = DEQCalculator(model, device=args["device"], fp_reuse=reuse, tol=args["tol"], reuse_tol=args["reuse_tol"],
                         dtype=args["dtype"], predictor=history)
    result = run_md(args["atoms"].copy(), calc, steps=args["steps"], dt_fs=args["dt_fs"],
                    temperature_k=args["temperature_k"], ensemble="nve", seed=args["seed"], progress=False)
    summary = result.summary()
    return {
        "atoms": len(args["atoms"]), "periodic": bool(np.all(args["atoms"].pbc)), "checkpoint": args["label"],
        "reuse_tol": calc.reuse_tol if reuse else None, "predictor": calc.predictor.history if reuse else None,
        "model": args["case"], "ms_per_step": summary["ms_per_step"], "solver_steps": summary["mean_solver_steps"],
        "adjoint_steps": summary["mean_adjoint_steps"], "first_step_solver_steps": summary["first_step_solver_steps"],
        "unconverged_steps": summary["unconverged_steps"], "peak_rss_mb": peak_rss_mb(), "model_rss_mb": model_rss,
    }


def _isolated(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`_case_worker` in a fresh Python process (its own peak memory); the structure travels
    as an extxyz file, the row comes back as JSON."""
    from ase.io import write

    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp) / "atoms.xyz", job["atoms"], format="extxyz")
        spec = {k: v for k, v in job.items() if k != "atoms"}
        (Path(tmp) / "job.json").write_text(json.dumps(spec))
        done = subprocess.run([sys.executable, "-m", "dequiformer.bench.md_speed", tmp], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"bench md case {job['label']}/{job['case']} ({len(job['atoms'])} atoms) failed:\n"
                               f"{done.stderr[-2000:]}")
        return json.loads((Path(tmp) / "row.json").read_text())


def _median_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (atoms, checkpoint, case): the run with the median ms per step, with every
    run's ms per step in ``ms_per_step_repeats``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["atoms"], r["checkpoint"], r["model"]), []).append(r)
    rows = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r["ms_per_step"])
        row = dict(group[(len(group) - 1) // 2])
        row["ms_per_step_repeats"] = [r["ms_per_step"] for r in groups[key]]
        row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in group)
        rows.append(row)
    return rows


def run_md_speed_benchmark(checkpoints: dict[str, str], molecule: Atoms, copies: Sequence[int] = DEFAULT_COPIES,
                           periodic: bool = False, steps: int | Sequence[int] = 10, dt_fs: float = 0.5,
                           temperature_k: float = 300.0,
                           tol: float = 1e-4, reuse_tol: float | None = None, dtype: str = "float32", device: str = "cpu",
                           threads: int | None = 1, seed: int = 0, isolate: bool = True,
                           progress: bool = True, repeats: int = 1) -> dict[str, Any]:
    """Every (size, checkpoint, case) row; DEQ checkpoints get the three DEQ cases, explicit ones
    one. ``repeats``: round-robin runs of each size's cases, rows keep the median ms per step.
    ``steps``: MD steps per case after the first call, one number for every size or one per entry
    of ``copies`` (a small system's step takes milliseconds: more steps there keep the timer above
    the machine's noise)."""
    from tqdm.auto import tqdm

    from ..train.checkpoint import load_checkpoint

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    steps_per_size = steps_for_sizes(steps, copies)
    kinds = {label: load_checkpoint(path)["config"]["model"].get("name") == "dequiformer"
             for label, path in checkpoints.items()}
    jobs = []
    for k, size_steps in zip(copies, steps_per_size):  # one size at a time, its cases interleaved (a shared load)
        atoms = molecule_grid(molecule, k, periodic=periodic)
        for _ in range(repeats):
            for label, path in checkpoints.items():
                for case in (["deq_cold", "deq_reuse", "deq_predictor"] if kinds[label] else ["explicit"]):
                    jobs.append({"path": str(path), "label": label, "case": case, "atoms": atoms, "steps": size_steps,
                                 "dt_fs": dt_fs, "temperature_k": temperature_k, "tol": tol, "reuse_tol": reuse_tol,
                                 "dtype": dtype, "device": device, "threads": threads, "seed": seed})
    run = _isolated if isolate else _case_worker
    runs = [run(job) for job in tqdm(jobs, desc="bench md", unit="case", disable=not progress)]
    rows = _median_rows(runs)
    ratios = []
    for n in sorted({r["atoms"] for r in rows}):
        at = {r["model"]: r for r in rows if r["atoms"] == n}
        if "explicit" in at:
            ratios.append({"atoms": n, **{f"{m}_vs_explicit": at[m]["ms_per_step"] / at["explicit"]["ms_per_step"]
                                          for m in ("deq_cold", "deq_reuse", "deq_predictor") if m in at}})
    return {"rows": rows, "ratios": ratios, "steps": steps_per_size, "dt_fs": dt_fs, "tol": tol, "reuse_tol": reuse_tol,
            "dtype": dtype, "device": device, "threads": threads, "isolated": isolate, "repeats": repeats,
            "units": {"ms_per_step": "ms", "solver_steps": "layer-block evaluations per MD step", "peak_rss_mb": "MiB"}}


def plot_md_speed(report: dict[str, Any], path: str | Path) -> Path:
    """ms per MD step against atoms (log-log), one line per checkpoint and case (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import plot_series, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    plot_series(ax, report["rows"], "atoms", "ms_per_step", ("checkpoint", "model"))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms")
    ax.set_ylabel("ms per MD step")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":  # one isolated case: python -m dequiformer.bench.md_speed FOLDER
    from ase.io import read

    folder = Path(sys.argv[1])
    case = json.loads((folder / "job.json").read_text())
    case["atoms"] = read(folder / "atoms.xyz")
    (folder / "row.json").write_text(json.dumps(_case_worker(case)))
