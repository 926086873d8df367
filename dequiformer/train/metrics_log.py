"""Per-epoch metrics: ``metrics.csv`` in the run directory (rewritten atomically from the full
history, which the checkpoint also holds, so a resumed run's file has exactly one row per
completed epoch) and TensorBoard scalars when ``torch.utils.tensorboard`` is importable."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from ..rundir import write_text

#: Column order of ``metrics.csv``. Energies in the training energy unit, forces in that unit per
#: Angstrom; ``*_solver_steps`` is the mean number of layer-block evaluations per structure,
#: ``train_bwd_steps`` the mean adjoint (IFT backward) solver steps per structure,
#: ``train_ms_per_step`` the wall time of one optimizer step, ``val_jacobian_radius`` the mean
#: spectral-radius estimate of the implicit layer's Jacobian at the fixed points of the first
#: validation batch (DEQ models; above ~1 the layer has stopped being contractive), ``elapsed``
#: the wall time since the run started (seconds, summed over resumed sessions), ``peak_rss_mb``
#: the process's resident-memory high-water mark so far (MiB; where memory grows during a run),
#: ``stage`` 1, or 2 from ``train.stage_two.start`` on.
COLUMNS = (
    "epoch", "lr", "seconds", "train_loss", "train_energy_mae", "train_forces_mae", "train_solver_steps",
    "train_bwd_steps", "train_ms_per_step", "val_energy_mae", "val_forces_mae", "val_solver_steps", "val_seconds",
    "val_jacobian_radius", "elapsed", "peak_rss_mb", "stage",
)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_metrics_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str] = COLUMNS) -> None:
    """Write all ``rows`` (dicts keyed by ``columns``: the force-field trainer's :data:`COLUMNS` by
    default, the classifiers' own) to ``path`` atomically; missing or NaN cells are empty."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in columns])
    write_text(path, buf.getvalue())


def read_metrics_csv(path: str | Path) -> list[dict[str, float | int | None]]:
    """Rows of a ``metrics.csv`` (numbers parsed; empty cells are ``None``)."""
    out: list[dict[str, float | int | None]] = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            parsed: dict[str, float | int | None] = {}
            for key, value in row.items():
                if value in ("", None):
                    parsed[key] = None
                elif key == "epoch":
                    parsed[key] = int(value)
                else:
                    parsed[key] = float(value)
            out.append(parsed)
    return out


class TensorBoardLog:
    """Thin optional wrapper: a no-op when TensorBoard is not installed or disabled."""

    def __init__(self, log_dir: str | Path | None, enabled: bool = True) -> None:
        self.writer = None
        if not enabled or log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard not installed
            return
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(float(value)):
                group, _, name = key.partition("_")
                tag = f"{group}/{name}" if group in ("train", "val") else key
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def epoch_line(row: dict[str, Any], epochs: int, unit: str) -> str:
    """The one line a force-field training epoch logs (errors in ``unit``; ``-`` where absent)."""
    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4g}"

    return (f"epoch {row['epoch']}/{epochs} lr {row['lr']:.3g} loss {f(row['train_loss'])} | train E {f(row['train_energy_mae'])} "
            f"F {f(row['train_forces_mae'])} | val E {f(row['val_energy_mae'])} F {f(row['val_forces_mae'])} ({unit}) | "
            f"steps {f(row['train_solver_steps'])}/{f(row['val_solver_steps'])} bwd {f(row['train_bwd_steps'])} "
            f"rho {f(row['val_jacobian_radius'])} | {row['seconds']:.1f} s")
