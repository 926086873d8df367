"""Train a classifier from a config of either route; :func:`bench_solvers` (benchmark the
fixed-point solvers on it) lives in :mod:`dequiformer.classify.bench` and is re-exported here."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .bench import bench_solvers
from .loop import LogHook, fit
from .routes import route_for_config

__all__ = ["bench_solvers", "train_classifier"]


def train_classifier(cfg: Mapping[str, Any], run_dir: str | Path, *, resume: str | Path | None = None,
                     log: LogHook | None = None) -> dict[str, Any]:
    """Train the classifier ``cfg`` describes (its route chosen by ``model.name``); write the run
    directory; return the summary (keys: :func:`dequiformer.classify.images.train_image_classifier`,
    plus ``route`` and ``model`` for 3D structures).

    ``resume``: a checkpoint of the same route and ``model`` / ``data`` settings to continue from.
    ``log``: also receives each progress line (they go to the ``dequiformer.classify`` loggers).
    """
    return fit(route_for_config(cfg).from_config(cfg), run_dir, resume=resume, log=log)
