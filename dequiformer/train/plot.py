"""Learning curves of training runs from their ``metrics.csv`` (``dequiformer plot``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .metrics_log import read_metrics_csv

#: panels: (title, unit template for the run's energy unit or None, [(column, label)], log scale)
PANELS = (
    ("energy MAE", "{}", [("train_energy_mae", "train"), ("val_energy_mae", "val")], True),
    ("force MAE", "{}/A", [("train_forces_mae", "train"), ("val_forces_mae", "val")], True),
    ("learning rate", None, [("lr", "lr")], True),
    ("solver steps per structure", None, [("train_solver_steps", "train fwd"), ("train_bwd_steps", "train bwd"),
                                          ("val_solver_steps", "val fwd")], False),
    ("Jacobian spectral radius (DEQ)", None, [("val_jacobian_radius", "val")], False),
)


def run_units(run_dir: Path) -> str:
    """The energy unit a run trained in (from its ``config.yaml``), or ``""``."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return ""
    cfg = yaml.safe_load(path.read_text()) or {}
    return str((cfg.get("model") or {}).get("energy_units") or "")


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, x: str = "epoch") -> Path:
    """One PNG with a panel per quantity of :data:`PANELS`, one colour per run, against the epoch
    (``x="epoch"``) or the training wall time in minutes (``x="time"``).

    Raises:
        FileNotFoundError: a run directory without ``metrics.csv``; ValueError: a bad ``x``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..bench.figures import save_figure

    if x not in ("epoch", "time"):
        raise ValueError(f"x must be 'epoch' or 'time', got {x!r}")
    runs: list[tuple[str, list[dict[str, Any]], str]] = []
    for run in map(Path, run_dirs):
        path = run / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{run}: no metrics.csv (is it a run directory of dequiformer train?)")
        runs.append((run.name or str(run), read_metrics_csv(path), run_units(run)))
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    styles = ("-", "--", ":")
    for i, (name, rows, unit) in enumerate(runs):
        xs = [r["epoch"] if x == "epoch" else (r.get("elapsed") or 0.0) / 60 for r in rows]
        for ax, (title, unit_template, columns, log) in zip(axes, PANELS):
            for j, (column, label) in enumerate(columns):
                pts = [(a, r.get(column)) for a, r in zip(xs, rows) if r.get(column) is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", linestyle=styles[j % 3],
                            marker="o", ms=2.5, label=f"{name} {label}")
            if log and ax.lines:
                ax.set_yscale("log")
            unit_text = f" ({unit_template.format(unit)})" if unit and unit_template else ""
            ax.set_title(title + unit_text, fontsize=9)
            ax.set_xlabel("epoch" if x == "epoch" else "training wall time (min)")
            ax.grid(alpha=0.3)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, out)
