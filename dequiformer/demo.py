"""The bundled demo: explicit 8-block EquiformerV2 vs DEQuiformer (cold and with fixed-point
reuse) on held-out GFN2-xTB aspirin frames and a short Langevin MD, all measured in one run."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ASSETS = Path(__file__).parent / "assets" / "demo"
FILES = {"deq": "deq.pt", "explicit": "explicit8.pt", "frames": "aspirin_heldout.npz"}


def asset_paths(assets: str | Path | None = None) -> dict[str, Path]:
    """Paths of the demo checkpoints and frames; a clear error names anything missing."""
    root = Path(assets) if assets is not None else ASSETS
    paths = {key: root / name for key, name in FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"demo assets missing: {', '.join(missing)} (see configs/demo/README.md to rebuild them)")
    return paths


def run_demo(assets: str | Path | None = None, out_dir: str | Path = "demo_out", md_steps: int = 60,
             temperature_k: float = 500.0, dt_fs: float = 0.5, eval_frames: int = 200, markov_frames: int = 40,
             seed: int = 0, progress: bool = True, reuse_tol: float | None = 1e-2) -> dict[str, Any]:
    """Run the demo; returns the report dict and writes ``report.md`` and ``solver_steps.png``.

    ``reuse_tol`` is the relative residual of warm-started solves (None: the checkpoint's
    ``deq.reuse_tol``). The demo default 1e-2 keeps the Markov difference under 1 % for the
    briefly trained bundled model; cold solves use the checkpoint's ``deq.tol``.
    """
    from .calculator import DEQCalculator
    from .data.readers import read_dataset
    from .simulate.markov import markov_check
    from .simulate.md import run_md
    from .train.checkpoint import load_model
    from .train.dataset import GraphDataset
    from .train.evaluate import evaluate

    paths = asset_paths(assets)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = read_dataset(paths["frames"])
    models = {"explicit": load_model(paths["explicit"]), "deq": load_model(paths["deq"])}
    units = models["deq"].units
    n_eval = min(eval_frames, len(data))
    accuracy = {}
    for name, model in models.items():
        graphs = GraphDataset(data.subset(range(n_eval)), model.cutoff, model.max_neighbors, next(model.parameters()).dtype)
        accuracy[name] = evaluate(model, graphs, batch_size=8)

    deq_cfg = models["deq"].deq_cfg
    tol = float(deq_cfg["tol"])
    reuse_tol = float(deq_cfg["reuse_tol"] if reuse_tol is None else reuse_tol)
    runs = {
        "explicit": (models["explicit"], False),
        "deq_cold": (models["deq"], False),
        "deq_reuse": (models["deq"], True),
    }
    report: dict[str, Any] = {}
    series: dict[str, list[int]] = {}
    for mode, (model, reuse) in runs.items():
        calc = DEQCalculator(model, fp_reuse=reuse, tol=tol, reuse_tol=reuse_tol)
        atoms = data[0].to_atoms()
        atoms.calc = None
        result = run_md(atoms, calc, md_steps, dt_fs=dt_fs, temperature_k=temperature_k, ensemble="langevin",
                        seed=seed, progress=progress)
        summary = result.summary()
        acc = accuracy["explicit" if mode == "explicit" else "deq"]
        series[mode] = [int(r["solver_steps"]) for r in result.rows]
        report[mode] = {
            "forces_mae": float(acc["forces_mae"]),
            "energy_mae": float(acc["energy_mae"]),
            "units": {"energy": units["energy"], "forces": f"{units['energy']}/{units['length']}"},
            "mean_solver_steps": float(summary["mean_solver_steps"]),
            "first_step_solver_steps": int(summary["first_step_solver_steps"]),
            "ms_per_step": float(summary["ms_per_step"]),
            "unconverged_steps": int(summary["unconverged_steps"]),
            "eval_frames": n_eval,
        }
    report["speedup_vs_explicit"] = report["explicit"]["ms_per_step"] / report["deq_reuse"]["ms_per_step"]
    report["speedup_cold_vs_explicit"] = report["explicit"]["ms_per_step"] / report["deq_cold"]["ms_per_step"]
    report["markov"] = markov_check(models["deq"], data, frames=min(markov_frames, len(data)),
                                    tol=tol, reuse_tol=reuse_tol, progress=progress)
    report["md"] = {"steps": md_steps, "ensemble": "langevin", "temperature_k": temperature_k, "dt_fs": dt_fs,
                    "threads": torch.get_num_threads(), "tol": tol, "reuse_tol": reuse_tol}
    report["seconds_total"] = time.perf_counter() - start
    _write_markdown(out_dir / "report.md", report)
    _plot(out_dir / "solver_steps.png", series, dt_fs)
    return report


def table(report: dict[str, Any]) -> str:
    """Markdown table of the three runs."""
    unit = report["deq_cold"]["units"]["forces"]
    lines = [f"| model | force MAE ({unit}) | energy MAE ({report['deq_cold']['units']['energy']}) | "
             "solver steps per MD step | ms per MD step | speed-up vs explicit |", "|---|---|---|---|---|---|"]
    explicit_ms = report["explicit"]["ms_per_step"]
    for mode, label in (("explicit", "EquiformerV2, 8 blocks"), ("deq_cold", "DEQuiformer, cold"),
                        ("deq_reuse", "DEQuiformer, fixed-point reuse")):
        r = report[mode]
        lines.append(f"| {label} | {r['forces_mae']:.3f} | {r['energy_mae']:.3f} | {r['mean_solver_steps']:.2f} | "
                     f"{r['ms_per_step']:.1f} | {explicit_ms / r['ms_per_step']:.2f}x |")
    return "\n".join(lines)


def _write_markdown(path: Path, report: dict[str, Any]) -> None:
    m = report["markov"]
    md = report["md"]
    text = (
        "# dequiformer demo\n\n"
        f"Held-out GFN2-xTB aspirin frames ({report['deq_cold']['eval_frames']} for the errors) and a "
        f"{md['steps']}-step Langevin MD at {md['temperature_k']:.0f} K, {md['dt_fs']} fs, "
        f"{md['threads']} torch thread(s); DEQ solves to a relative residual of {md['tol']:g} cold and "
        f"{md['reuse_tol']:g} from the previous step's fixed point. Every number below was measured in this run.\n\n"
        + table(report) + "\n\n"
        f"Markov check over {m['frames']} consecutive frames: mean relative force difference between "
        f"warm-started and cold solves {100 * m['force_rel_diff_mean']:.3f} % (max {100 * m['force_rel_diff_max']:.3f} %); "
        f"mean solver steps cold {m['mean_steps_cold']:.2f}, with reuse {m['mean_steps_reuse']:.2f}.\n\n"
        "![solver steps per MD step](solver_steps.png)\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _plot(path: Path, series: dict[str, list[int]], dt_fs: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = {"explicit": "EquiformerV2 (8 blocks)", "deq_cold": "DEQuiformer, cold", "deq_reuse": "DEQuiformer, reuse"}
    for mode, steps in series.items():
        ax.plot(np.arange(len(steps)) * dt_fs, steps, label=labels[mode], drawstyle="steps-mid")
    ax.set_xlabel("MD time (fs)")
    ax.set_ylabel("block evaluations per force call")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
