"""What a classifier run leaves to read: ``metrics.csv``, the confusion matrix (PNG + CSV),
predictions CSV and the summary. Every file is written atomically (:mod:`dequiformer.rundir`).

Times are wall seconds of the training steps (evaluation excluded) unless a name says otherwise.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..bench.figures import save_figure
from ..rundir import atomic_output

__all__ = ["METRIC_COLUMNS", "SUMMARY_ROW_KEYS", "nan_to_none", "save_confusion_matrix", "summarize",
           "write_predictions_csv"]

# one row per epoch; a route may add columns (the structure route: test_mean_steps, correction_loss)
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "mean_f_evals",
                  "mean_b_evals", "mean_steps", "converged_fraction", "test_mean_f_evals", "train_seconds",
                  "eval_seconds", "elapsed_train_seconds")
# the first fields of bench_solvers' rows, taken from each run's summary (dequiformer.classify.bench adds more)
SUMMARY_ROW_KEYS = ("solver", "epochs", "train_acc", "test_acc", "seconds", "seconds_to_target", "mean_f_evals",
                    "mean_b_evals", "mean_steps", "converged_fraction")


def nan_to_none(value: Any) -> Any:
    """``None`` for a float NaN (JSON has no NaN), else ``value``."""
    return None if isinstance(value, float) and math.isnan(value) else value


def save_confusion_matrix(labels: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                          class_names: Sequence[str], path: str | Path, title: str = "") -> np.ndarray:
    """Plot the ``[true, predicted]`` count matrix ``[k, k]`` to ``path`` (PNG) and a ``.csv``
    beside it; returns the matrix."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none assumed
    import matplotlib.pyplot as plt

    k = len(class_names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    path = Path(path)
    size = 2.5 + 0.6 * k
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > 0.6 * max(cm.max(), 1) else "black", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    with atomic_output(path.with_suffix(".csv")) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, cm):
            writer.writerow([name, *row.tolist()])
    return cm


def write_predictions_csv(out: Mapping[str, Any], class_names: Sequence[str], y: torch.Tensor | None,
                          ids: Sequence[str], path: str | Path) -> dict[str, Any]:
    """Write predictions as CSV, one row per sample (id, label, prediction, class probabilities,
    solver steps, residual).

    ``out``: ``probs`` ``[n, classes]``, ``steps`` ``[n]`` (f evaluations until the sample
    converged), ``residual`` ``[n]``, ``mean_f_evals``; ``y``: labels ``[n]`` or ``None``.
    Returns ``{"n", "accuracy" (None without labels), "output", "mean_f_evals"}``.
    """
    pred = out["probs"].argmax(1)
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "id", "label", "label_name", "pred", "pred_name",
                         *[f"prob_{c}" for c in class_names], "solver_steps", "residual"])
        for i in range(len(pred)):
            label = int(y[i]) if y is not None else ""
            writer.writerow([i, ids[i], label, class_names[label] if y is not None else "", int(pred[i]),
                             class_names[int(pred[i])], *[f"{p:.6f}" for p in out["probs"][i].tolist()],
                             int(out["steps"][i]), f"{float(out['residual'][i]):.3e}"])
    acc = float((pred == y).float().mean()) if y is not None and len(y) else None
    return {"n": int(len(pred)), "accuracy": acc, "output": str(path),
            "mean_f_evals": nan_to_none(out["mean_f_evals"])}


def summarize(history: Sequence[Mapping[str, Any]], best: float, target_accuracy: float, run_dir: str | Path,
              solver: str, parameters: int, head: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The run's summary (``summary.json``): the last epoch's accuracies, training seconds,
    ``seconds_to_target`` (training seconds until the first epoch whose train accuracy reached
    ``target_accuracy``; ``None`` if never), means over epochs of the solver numbers, and the
    history; ``head`` fields come right after ``run_dir``. NaN is written as ``None``."""
    last = history[-1]
    reached = [r for r in history if r["train_acc"] >= target_accuracy]
    return {
        "run_dir": str(run_dir), **(head or {}), "solver": solver, "epochs": last["epoch"],
        "train_acc": last["train_acc"], "test_acc": nan_to_none(last["test_acc"]),
        "best_test_acc": nan_to_none(best), "seconds": last["elapsed_train_seconds"],
        "target_accuracy": target_accuracy,
        "seconds_to_target": reached[0]["elapsed_train_seconds"] if reached else None,
        "mean_f_evals": float(np.mean([r["mean_f_evals"] for r in history])),
        "mean_b_evals": float(np.mean([r["mean_b_evals"] for r in history])),
        "mean_steps": float(np.mean([r["mean_steps"] for r in history])),
        "converged_fraction": float(np.mean([r["converged_fraction"] for r in history])),
        "parameters": parameters, "history": [{k: nan_to_none(v) for k, v in r.items()} for r in history],
    }
