"""Accuracy at equal budget: train several configs on the same data, one thread each, and
evaluate them on the same held-out file.

Each config is trained by ``dequiformer train`` in its own process (so peak memory is that
process's own) with the same ``--set`` overrides, an epoch budget (``train.epochs``) or a wall
budget (``train.max_seconds`` with ``train.lr_schedule: seconds``: each model's cosine decay
ends when the budget does, so no model is cut half way down its schedule), then its
``best.pt`` is evaluated by ``dequiformer eval --split all`` on the held-out file. Rows:
``model, params, seconds, epochs, energy_mae, forces_mae, units, train_peak_rss_mb,
train_rss_growth_mb, train_ms_per_step, fwd_steps, bwd_steps`` (errors in the training units;
solver steps are the last epoch's means per structure; ``train_rss_growth_mb`` is the peak
resident memory above the process's memory when training started).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from ..device import resolve_device
from ..train.metrics_log import read_metrics_csv

DEFAULT_CONFIGS = ("configs/demo/deq.yaml", "configs/demo/explicit8.yaml")


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dequiformer.cli.main", *args]


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def train_and_eval(config: str, name: str, data: str, heldout: str, out_dir: Path, overrides: Sequence[str],
                   threads: int = 1, device: str = "cpu", eval_max_iter: int | None = None) -> subprocess.Popen:
    """Start training ``config`` into ``out_dir/name`` and evaluating it (one shell pipeline) on
    ``device``; a DEQ is evaluated with ``eval_max_iter`` solver steps per solve when given."""
    run_dir = out_dir / name
    sets = [f"data.path={data}", f"train.num_threads={threads}", f"train.device={device}", "train.progress=false",
            *overrides]
    train = _command("train", config, "--run-dir", str(run_dir), "--json", str(out_dir / f"{name}.train.json"),
                     "--set", *sets)
    evaluate = _command("eval", str(run_dir / "best.pt"), "--data", heldout, "--split", "all",
                        "--device", device, "--json", str(out_dir / f"{name}.eval.json"))
    if eval_max_iter is not None and is_deq_config(config, overrides):
        evaluate += ["--max-iter", str(int(eval_max_iter))]
    script = f"{shlex.join(train)} && {shlex.join(evaluate)}"
    with open(out_dir / f"{name}.log", "w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(["bash", "-c", script], stdout=log, stderr=subprocess.STDOUT, env=_env(threads))


def is_deq_config(config: str, overrides: Sequence[str] = ()) -> bool:
    """Whether ``config`` (with ``overrides``) trains a DEQuiformer."""
    from ..config import load_config

    return load_config(config, overrides)["model"].get("name") == "dequiformer"


def collect_row(name: str, out_dir: Path) -> dict[str, Any]:
    """One result row from a finished run's summary, evaluation and metrics."""
    train = json.loads((out_dir / f"{name}.train.json").read_text())
    ev = json.loads((out_dir / f"{name}.eval.json").read_text())
    rows = read_metrics_csv(out_dir / name / "metrics.csv")
    last = rows[-1] if rows else {}
    return {
        "model": name,
        "params": int(train["parameters"]),
        "seconds": float(train["seconds"]),
        "epochs": int(train["epochs"]),
        "energy_mae": float(ev["energy_mae"]),
        "forces_mae": float(ev["forces_mae"]),
        "eval_unconverged": int((ev.get("solver") or {}).get("unconverged") or 0),
        "units": ev["units"],
        "train_peak_rss_mb": float(train["peak_rss_mb"]),
        "train_rss_growth_mb": float(train["peak_rss_mb"]) - float(train["start_rss_mb"]),
        "train_ms_per_step": last.get("train_ms_per_step"),
        "fwd_steps": last.get("train_solver_steps"),
        "bwd_steps": last.get("train_bwd_steps"),
        "curve": [{"elapsed": r.get("elapsed"), "val_energy_mae": r.get("val_energy_mae"),
                   "val_forces_mae": r.get("val_forces_mae")} for r in rows],
    }


def run_accuracy_benchmark(configs: Sequence[str], data: str, heldout: str, out_dir: str | Path,
                           overrides: Sequence[str] = (), parallel: int = 2, threads: int = 1,
                           names: Sequence[str] | None = None, device: str = "cpu",
                           eval_max_iter: int | None = 40) -> dict[str, Any]:
    """Train and evaluate every config (``parallel`` at a time, each on ``device``); returns
    ``{"rows": [...]}``. DEQs are evaluated with ``eval_max_iter`` solver steps per solve (the
    shipped models' inference budget; a training config's ``deq.max_iter`` may leave held-out
    solves unconverged); ``eval_unconverged`` in each row counts the solves that still were not.

    Raises RuntimeError naming the config and its log when a run fails; ValueError before any
    run when ``device`` is not on this machine.
    """
    resolve_device(device, what="--device")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(names or [Path(c).stem for c in configs])
    if len(set(names)) != len(names):
        raise ValueError(f"configs must have distinct names, got {names}")
    pending = list(zip(configs, names))
    running: list[tuple[str, str, subprocess.Popen]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < max(int(parallel), 1):
            config, name = pending.pop(0)
            running.append((config, name, train_and_eval(config, name, data, heldout, out, overrides, threads,
                                                                   device, eval_max_iter)))
        config, name, proc = running.pop(0)
        if proc.wait() != 0:
            failed.append(f"{config} (log: {out / (name + '.log')})")
    if failed:
        raise RuntimeError("training or evaluation failed for " + ", ".join(failed))
    return {"rows": [collect_row(name, out) for name in names], "data": str(data), "heldout": str(heldout),
            "overrides": list(overrides)}


def plot_learning_curves(report: dict[str, Any], path: str | Path) -> Path:
    """Validation energy and force MAE against wall time, one line per model (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    unit = None
    for row in report["rows"]:
        pts = [p for p in row["curve"] if p["elapsed"] is not None and p["val_forces_mae"] is not None]
        t = [p["elapsed"] / 60 for p in pts]
        axes[0].plot(t, [p["val_energy_mae"] for p in pts], marker="o", ms=3, label=row["model"])
        axes[1].plot(t, [p["val_forces_mae"] for p in pts], marker="o", ms=3, label=row["model"])
        unit = row["units"]
    for ax, what in zip(axes, ("energy", "forces")):
        ax.set_xlabel("training wall time (min)")
        ax.set_ylabel(f"validation {what} MAE ({unit[what] if unit else ''})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
