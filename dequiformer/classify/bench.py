"""``dequiformer classify bench``: Anderson against forward iteration, measured as the Deep
AndersoNN papers measure it.

Both solvers train the same initial model on the same batch order (:func:`bench_solvers`); each
solver's run directory is ``<run_dir>/<solver>``. The report adds to each run's summary:

* plateau accuracies: the mean train / test accuracy of the last ``plateau_epochs`` epochs
  (what the papers read off a flattened accuracy curve), beside the best epoch's;
* per-epoch histories: accuracies, cumulative training seconds, forward and backward f
  evaluations per batch (how the solver's cost changes while the layer is learned);
* the crossover measurement (image route): relative residual against wall time for each solver
  from ``z0 = 0`` on one fixed batch, for the initial model and for the first solver's trained
  model (:func:`residual_trace`, :func:`crossover_seconds`);
* one PNG (:func:`save_bench_figure`): (a) the residual curves, (b) train / test accuracy
  against training wall time, (c) f evaluations per batch against epoch.

Times are wall seconds. Training times count the optimizer steps only (evaluation excluded),
as in :mod:`dequiformer.classify.report`.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..bench.figures import save_figure
from ..deq.solvers import get_solver, solver_options
from .config import resolve_image_config, resolve_structure_config, uses_structure_route
from .loop import LogHook, emit, fit
from .report import SUMMARY_ROW_KEYS, nan_to_none

__all__ = ["PLATEAU_EPOCHS", "TRACE_TOL", "bench_row", "bench_solvers", "crossover_seconds", "plateau",
           "residual_trace", "save_bench_figure"]

logger = logging.getLogger(__name__)

PLATEAU_EPOCHS = 3
"""Epochs averaged for the plateau accuracies (fewer when the run is shorter)."""
TRACE_TOL = 1e-6
"""Residual at which an image stops in the crossover traces: near float32's floor, so the curves
show the whole descent rather than stopping at the training tolerance."""
# per-epoch lists in each row: row field <- metrics column
EPOCH_SERIES = {"epoch_seconds": "elapsed_train_seconds", "train_acc_per_epoch": "train_acc",
                "test_acc_per_epoch": "test_acc", "f_evals_per_epoch": "mean_f_evals",
                "b_evals_per_epoch": "mean_b_evals", "converged_fraction_per_epoch": "converged_fraction"}


def plateau(values: Sequence[float | None], epochs: int = PLATEAU_EPOCHS) -> float | None:
    """Mean of the last ``epochs`` values (``None`` entries, i.e. no test split, are skipped);
    ``None`` when there is nothing to average."""
    tail = [float(v) for v in list(values)[-max(int(epochs), 1):] if v is not None]
    return float(np.mean(tail)) if tail else None


def bench_row(summary: Mapping[str, Any], plateau_epochs: int = PLATEAU_EPOCHS) -> dict[str, Any]:
    """One solver's row of the bench report from its run summary.

    Fields: :data:`~dequiformer.classify.report.SUMMARY_ROW_KEYS` (``solver``, ``epochs``,
    ``train_acc`` / ``test_acc`` of the last epoch, ``seconds`` of training,
    ``seconds_to_target``, ``mean_f_evals``, ``mean_b_evals``, ``mean_steps``,
    ``converged_fraction``), then ``plateau_train_acc`` / ``plateau_test_acc`` (mean of the
    last ``plateau_epochs`` epochs), ``best_train_acc`` / ``best_test_acc`` (best epoch), and
    the per-epoch lists of :data:`EPOCH_SERIES` (length ``epochs``): ``epoch_seconds``
    (cumulative training seconds at each epoch's end), ``train_acc_per_epoch``,
    ``test_acc_per_epoch``, ``f_evals_per_epoch`` / ``b_evals_per_epoch`` (mean forward /
    backward f evaluations per training batch), ``converged_fraction_per_epoch``.
    """
    history = summary["history"]
    row = {k: summary[k] for k in SUMMARY_ROW_KEYS}
    series = {name: [nan_to_none(r[col]) for r in history] for name, col in EPOCH_SERIES.items()}
    tests = [v for v in series["test_acc_per_epoch"] if v is not None]
    row.update(plateau_epochs=min(int(plateau_epochs), len(history)),
               plateau_train_acc=plateau(series["train_acc_per_epoch"], plateau_epochs),
               plateau_test_acc=plateau(series["test_acc_per_epoch"], plateau_epochs),
               best_train_acc=float(max(series["train_acc_per_epoch"])),
               best_test_acc=float(max(tests)) if tests else None, **series)
    return row


# --------------------------------------------------------------------------- crossover
@torch.no_grad()
def residual_trace(layer: torch.nn.Module, x: torch.Tensor, solver: str, options: Mapping[str, Any] | None = None,
                   *, tol: float = TRACE_TOL, max_iter: int = 60, repeats: int = 2) -> dict[str, Any]:
    """Solve ``z = layer(z, x)`` from ``z0 = 0`` and record the residual after every f evaluation.

    ``x``: the injection ``[B, C, H, W]`` of one batch; ``solver``: ``anderson`` or ``forward``
    with ``options`` (its keys of :data:`~dequiformer.deq.solvers.SOLVER_OPTIONS`, e.g. ``m``,
    ``beta``, ``lam``). The solve is timed ``repeats`` times and each evaluation's elapsed
    time is the minimum over repeats (the solve is deterministic; the minimum removes other
    processes' interference on a shared machine).

    Returns ``{"solver", "options", "seconds": [k] elapsed wall seconds at the end of
    evaluation i (solver overhead included), "residual_mean": [k], "residual_max": [k] (per-image
    relative residual over the batch), "nfe", "batch"}`` with ``k`` = f evaluations made.
    """
    opts = solver_options(solver, dict(options or {}))
    stamps: list[float] = []

    def f(z: torch.Tensor) -> torch.Tensor:
        out = layer(z, x)
        stamps.append(time.perf_counter())
        return out

    runs = []
    for _ in range(max(int(repeats), 1)):
        stamps.clear()
        start = time.perf_counter()
        _, stats = get_solver(solver)(f, torch.zeros_like(x), tol=float(tol), max_iter=int(max_iter), trace=True,
                                      **opts)
        runs.append(([s - start for s in stamps], stats))
    k = min(len(s) for s, _ in runs)
    seconds = np.min(np.array([s[:k] for s, _ in runs]), axis=0)
    trace = torch.stack(runs[0][1].trace[:k]).float()  # [k, B]
    return {"solver": solver, "options": opts, "seconds": [float(s) for s in seconds],
            "residual_mean": [float(r) for r in trace.mean(1)], "residual_max": [float(r) for r in trace.amax(1)],
            "nfe": int(runs[0][1].nfe), "batch": int(x.shape[0])}


def crossover_seconds(first: Mapping[str, Any], second: Mapping[str, Any], key: str = "residual_mean"
                      ) -> float | None:
    """Wall seconds from which ``first``'s residual curve stays at or below ``second``'s
    (curves from :func:`residual_trace`, read as step functions of time, compared up to the
    end of the shorter one); ``None`` when ``first`` is above ``second`` at that end."""
    def level(curve: Mapping[str, Any], t: float) -> float:
        i = int(np.searchsorted(curve["seconds"], t, side="right")) - 1
        return curve[key][i] if i >= 0 else float("inf")  # before the first evaluation: no residual yet

    end = min(first["seconds"][-1], second["seconds"][-1])
    times = sorted(t for t in {*first["seconds"], *second["seconds"]} if t <= end)
    below = [level(first, t) <= level(second, t) for t in times]
    if not below or not below[-1]:
        return None
    i = len(below) - 1
    while i > 0 and below[i - 1]:
        i -= 1
    return float(times[i])


def _first_time_below(curve: Mapping[str, Any], level: float, key: str = "residual_max") -> float | None:
    hits = [t for t, r in zip(curve["seconds"], curve[key]) if r < level]
    return float(hits[0]) if hits else None


def _trace_batch(splits: Any, size: int) -> torch.Tensor:
    """The fixed batch of the crossover traces: the first ``size`` test images (training images
    when the test split is empty), as floats in [0, 1], ``[b, C, H, W]``."""
    images = splits.test_x if len(splits.test_x) else splits.train_x
    return images[:size].float().div(255.0)


def _crossover(model: Any, images: torch.Tensor, solvers: Sequence[str], deq: Mapping[str, Any], label: str,
               batch_statistics: bool, max_iter: int, repeats: int) -> dict[str, Any]:
    """Traces of every solver on ``model``'s layer for one batch (see :func:`residual_trace`)."""
    model.train(batch_statistics)
    with torch.no_grad():
        x = model.inject(images.to(next(model.parameters()).dtype))
    model.eval()
    curves = {s: residual_trace(model.layer, x, s, deq.get(s) or {},
                                max_iter=max_iter, repeats=repeats) for s in solvers}
    out: dict[str, Any] = {"model": label, "curves": curves,
                           "seconds_to_tol": {s: _first_time_below(c, float(deq["tol"])) for s, c in curves.items()}}
    if "anderson" in curves and "forward" in curves:
        out["crossover_seconds"] = crossover_seconds(curves["anderson"], curves["forward"])
    return out


def _crossover_study(cfg: Mapping[str, Any], run_dir: Path, solvers: Sequence[str], max_iter: int, repeats: int,
                     log: LogHook | None) -> dict[str, Any]:
    """Residual traces of the initial model and of ``solvers[0]``'s trained model (image route)."""
    from .images import ImageRoute, load_image_classifier

    route = ImageRoute.from_config(cfg)  # same seed as training: the very initial weights both runs started from
    deq = route.cfg["deq"]
    images = _trace_batch(route.splits, int(route.cfg["train"]["batch_size"]))
    # the initial model's stem sees batch statistics, as the first training step does (its BatchNorm
    # running statistics are still the identity); a trained model uses its running statistics
    runs = [_crossover(route.model, images, solvers, deq, "initial", True, max_iter, repeats)]
    trained, _ = load_image_classifier(run_dir / solvers[0] / "last.pt", route.device)
    runs.append(_crossover(trained, images, solvers, deq, f"trained ({solvers[0]})", False, max_iter, repeats))
    for r in runs:
        ends = ", ".join(f"{s} {c['residual_mean'][-1]:.1e} after {c['seconds'][-1]:.2f} s ({c['nfe']} evals)"
                         for s, c in r["curves"].items())
        emit(f"crossover, {r['model']} model: {ends}; anderson below forward from "
             f"{r.get('crossover_seconds')} s", log, logger)
    return {"batch": int(images.shape[0]), "source": "test" if len(route.splits.test_x) else "train",
            "tol": TRACE_TOL, "max_iter": int(max_iter), "repeats": int(repeats), "runs": runs}


# --------------------------------------------------------------------------- figure
def save_bench_figure(report: Mapping[str, Any], path: str | Path) -> Path:
    """The bench PNG: (a) mean relative residual against wall seconds on the fixed batch per
    solver (solid: trained model, dashed: initial; absent on the structure route), (b) train
    (solid) and test (dashed) accuracy against cumulative training seconds, (c) forward (solid)
    and backward (dashed) f evaluations per batch against epoch."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none assumed
    import matplotlib.pyplot as plt

    rows = report["rows"]
    colours = {r["solver"]: f"C{i}" for i, r in enumerate(rows)}
    fig, (ax_r, ax_a, ax_f) = plt.subplots(1, 3, figsize=(15, 4.4))
    crossover = report.get("crossover")
    if crossover:
        for run, style in zip(crossover["runs"], ("--", "-")):
            for solver, c in run["curves"].items():
                ax_r.semilogy(c["seconds"], c["residual_mean"], style, color=colours.get(solver, "k"),
                              label=f"{solver}, {run['model']}")
        ax_r.axhline(float(report["tol"]), color="grey", lw=0.8, ls=":", label=f"training tol {report['tol']:g}")
        ax_r.set_title(f"(a) one batch of {crossover['batch']}, from z0 = 0")
        ax_r.legend(fontsize=7)
    else:
        ax_r.text(0.5, 0.5, "no residual traces\n(structure route)", ha="center", va="center", transform=ax_r.transAxes)
        ax_r.set_title("(a) residual against time")
    ax_r.set_xlabel("wall seconds")
    ax_r.set_ylabel("mean relative residual")
    for r in rows:
        c = colours[r["solver"]]
        ax_a.plot(r["epoch_seconds"], r["train_acc_per_epoch"], "-o", ms=3, color=c, label=f"{r['solver']} train")
        if any(v is not None for v in r["test_acc_per_epoch"]):
            test = [np.nan if v is None else v for v in r["test_acc_per_epoch"]]
            ax_a.plot(r["epoch_seconds"], test, "--s", ms=3, color=c, label=f"{r['solver']} test")
        epochs = range(1, len(r["f_evals_per_epoch"]) + 1)
        ax_f.plot(epochs, r["f_evals_per_epoch"], "-o", ms=3, color=c, label=f"{r['solver']} forward")
        ax_f.plot(epochs, r["b_evals_per_epoch"], "--s", ms=3, color=c, label=f"{r['solver']} backward")
    ax_a.axhline(float(report["target_accuracy"]), color="grey", lw=0.8, ls=":", label="target")
    ax_a.set_xlabel("training wall seconds")
    ax_a.set_ylabel("accuracy")
    ax_a.set_title("(b) accuracy against training time")
    ax_a.legend(fontsize=7)
    ax_f.set_xlabel("epoch")
    ax_f.set_ylabel("f evaluations per batch")
    ax_f.set_title("(c) solver cost during training")
    ax_f.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


# --------------------------------------------------------------------------- the bench
def bench_solvers(cfg: Mapping[str, Any], run_dir: str | Path, solvers: Sequence[str] = ("anderson", "forward"),
                  log: LogHook | None = None, *, plateau_epochs: int = PLATEAU_EPOCHS, trace_iters: int = 60,
                  trace_repeats: int = 2, figure: str | Path | None = None) -> dict[str, Any]:
    """Train the same model (same init and batch order) once per solver and compare them.

    Returns ``{"rows": [...], "target_accuracy", "tol", "plateau_epochs", "data", "seed",
    "run_dir", "crossover", "figure"}``:

    * ``rows``: one per solver, fields of :func:`bench_row`;
    * ``tol``: the training tolerance ``deq.tol``;
    * ``crossover`` (image route; ``None`` on the structure route): ``{"batch", "source",
      "tol", "max_iter", "repeats", "runs"}``, each run ``{"model": "initial" | "trained
      (<first solver>)", "curves": {solver: residual_trace(...)}, "seconds_to_tol": {solver:
      seconds until every image's residual < deq.tol, or None}, "crossover_seconds"}``
      (:func:`crossover_seconds` of anderson against forward). ``trace_iters`` caps the f
      evaluations of each trace, ``trace_repeats`` the timing repeats;
    * ``figure``: the PNG (:func:`save_bench_figure`; default ``<run_dir>/bench.png``).

    A structure-route config needs ``model.name: dequiformer``: the explicit ``equiformer_v2``
    has no solver and is an error.
    """
    if uses_structure_route(cfg):
        resolved = resolve_structure_config(cfg)
        if resolved["model"].get("name") != "dequiformer":
            raise ValueError(f"classify bench compares DEQ solvers; model.name {resolved['model'].get('name')!r} "
                             "has no fixed-point solver (use model.name: dequiformer)")
    else:
        resolved = resolve_image_config(cfg)
    from .routes import route_for_config  # imported here: it loads both routes' modules

    run_dir = Path(run_dir)
    rows = []
    for solver in solvers:
        run_cfg = copy.deepcopy(dict(cfg))
        run_cfg["deq"] = {**(run_cfg.get("deq") or {}), "solver": solver}
        emit(f"--- bench: {solver}", log, logger)
        rows.append(bench_row(fit(route_for_config(run_cfg).from_config(run_cfg), run_dir / solver, log=log),
                              plateau_epochs))
    crossover = None
    if not uses_structure_route(cfg):
        emit(f"--- bench: residual against time on one batch ({', '.join(solvers)})", log, logger)
        crossover = _crossover_study(cfg, run_dir, solvers, trace_iters, trace_repeats, log)
    report = {"rows": rows, "target_accuracy": float(resolved["train"]["target_accuracy"]),
              "tol": float(resolved["deq"]["tol"]), "plateau_epochs": int(plateau_epochs),
              "data": str(resolved["data"]["path"]), "seed": resolved["train"]["seed"], "run_dir": str(run_dir),
              "crossover": crossover}
    report["figure"] = str(save_bench_figure(report, Path(figure) if figure else run_dir / "bench.png"))
    return report
