"""Predictions of a trained classifier (either route) on a split of its data, written as CSV."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..config import apply_override
from .checkpoint import load_classifier_checkpoint
from ..device import resolve_device
from .config import uses_structure_route
from .report import nan_to_none, write_predictions_csv
from .routes import ROUTES

__all__ = ["predict_split"]


def predict_split(checkpoint: str | Path, cfg: Mapping[str, Any] | None = None, split: str = "test",
                  out: str | Path | None = None, batch_size: int = 256, device: str | torch.device = "auto",
                  overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Class probabilities of ``split`` (``test``, ``train`` or ``all``: train then test) -> CSV.

    Args:
        checkpoint: a classifier checkpoint (``last.pt`` / ``best.pt`` of a run).
        cfg: a config whose ``data`` section names the images / structures (``None``: the
            checkpoint's own); its route must be the checkpoint's.
        out: the CSV (default ``predictions_<split>.csv`` beside the checkpoint).
        overrides: ``SECTION.KEY=VALUE`` items applied to the checkpoint's config when ``cfg`` is None.

    Returns the report of :func:`dequiformer.classify.report.write_predictions_csv` plus
    ``checkpoint``, ``split``, ``solver`` and, for 3D structures, ``mean_steps``.
    """
    dev = resolve_device(device, what="--device")
    state = load_classifier_checkpoint(checkpoint, map_location=dev)
    if cfg is None:
        cfg = copy.deepcopy(state["config"])
        for item in overrides:
            apply_override(cfg, item)
    route_cls = ROUTES[state["route"]]
    if uses_structure_route(cfg) != (route_cls.kind == "structure"):
        raise ValueError(f"{checkpoint} is a {route_cls.kind} classifier, but the config's model.name "
                         f"{(cfg.get('model') or {}).get('name')!r} is for the other route")
    data_cfg = cfg.get("data") or {}
    route = route_cls.from_checkpoint(state, data_cfg, dev)
    class_names = list(state["class_names"])
    if len(route.splits.class_names) != len(class_names):
        raise ValueError(f"{checkpoint}: model has {len(class_names)} classes but data.path "
                         f"{data_cfg.get('path')} has {len(route.splits.class_names)}")
    inputs, y, ids = route.splits.select(split)
    out_path = Path(out) if out is not None else Path(checkpoint).parent / f"predictions_{split}.csv"
    result = route.predict(inputs, batch_size)
    report = write_predictions_csv(result, class_names, y, ids, out_path)
    report.update(checkpoint=str(checkpoint), split=split, solver=route.solver,
                  **{k: nan_to_none(result[k]) for k in route.test_extras})
    return report
