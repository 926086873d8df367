"""Writing the benchmarks' figures: one way for all of them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write a matplotlib figure as PNG atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    from ..rundir import atomic_output

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return Path(path)


def plot_series(ax: Any, rows: Sequence[dict[str, Any]], x: str, y: str, group: tuple[str, str]) -> None:
    """One line of ``y`` against ``x`` (sorted by ``x``) per distinct pair of ``group`` values,
    labelled ``"first: second"``."""
    for a, b in sorted({(r[group[0]], r[group[1]]) for r in rows}):
        pts = sorted((r[x], r[y]) for r in rows if r[group[0]] == a and r[group[1]] == b)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{a}: {b}")
