"""Train a classifier from a config of either route, or benchmark fixed-point solvers on it."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from .config import resolve_image_config, resolve_structure_config, uses_structure_route
from .loop import LogHook, emit, fit
from .report import SUMMARY_ROW_KEYS
from .routes import route_for_config

__all__ = ["bench_solvers", "train_classifier"]

logger = logging.getLogger(__name__)


def train_classifier(cfg: Mapping[str, Any], run_dir: str | Path, *, resume: str | Path | None = None,
                     log: LogHook | None = None) -> dict[str, Any]:
    """Train the classifier ``cfg`` describes (its route chosen by ``model.name``); write the run
    directory; return the summary (keys: :func:`dequiformer.classify.images.train_image_classifier`,
    plus ``route`` and ``model`` for 3D structures).

    ``resume``: a checkpoint of the same route and ``model`` / ``data`` settings to continue from.
    ``log``: also receives each progress line (they go to the ``dequiformer.classify`` loggers).
    """
    return fit(route_for_config(cfg).from_config(cfg), run_dir, resume=resume, log=log)


def bench_solvers(cfg: Mapping[str, Any], run_dir: str | Path, solvers: Sequence[str] = ("anderson", "forward"),
                  log: LogHook | None = None) -> dict[str, Any]:
    """Train the same model (same init and batch order) once per solver; ``{"rows": [...], ...}``.

    Each row: ``solver``, ``epochs``, ``train_acc``, ``test_acc``, ``seconds``,
    ``seconds_to_target`` (``None`` when ``train.target_accuracy`` was not reached),
    ``mean_f_evals`` (batch f evaluations per training batch), ``mean_b_evals``,
    ``mean_steps`` and ``converged_fraction``. Each solver's run directory is
    ``<run_dir>/<solver>``. A structure-route config needs ``model.name: dequiformer``: the
    explicit ``equiformer_v2`` has no solver and is an error.
    """
    if uses_structure_route(cfg):
        resolved = resolve_structure_config(cfg)
        if resolved["model"].get("name") != "dequiformer":
            raise ValueError(f"classify bench compares DEQ solvers; model.name {resolved['model'].get('name')!r} "
                             "has no fixed-point solver (use model.name: dequiformer)")
    else:
        resolved = resolve_image_config(cfg)
    rows = []
    for solver in solvers:
        run_cfg = copy.deepcopy(dict(cfg))
        run_cfg["deq"] = {**(run_cfg.get("deq") or {}), "solver": solver}
        emit(f"--- bench: {solver}", log, logger)
        summary = train_classifier(run_cfg, Path(run_dir) / solver, log=log)
        rows.append({k: summary[k] for k in SUMMARY_ROW_KEYS})
    return {"rows": rows, "target_accuracy": float(resolved["train"]["target_accuracy"]),
            "data": str(resolved["data"]["path"]), "seed": resolved["train"]["seed"], "run_dir": str(run_dir)}
