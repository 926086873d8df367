"""What a classifier checkpoint holds; written and read through :mod:`dequiformer.rundir`.

A classifier checkpoint is a ``kind: "classifier"`` checkpoint of :mod:`dequiformer.rundir`
(so it loads with ``torch.load(weights_only=True)``) with

* ``route``: ``"image"`` or ``"structure"`` (which route built the model),
* ``config``: the resolved config (model shape keys filled in from the data),
* ``class_names``, ``model`` (state dict), ``optimizer``, ``scheduler`` (state dicts),
* ``epoch`` (the last finished one, from 1), ``rng`` (:func:`dequiformer.rundir.rng_state`),
  ``history`` (one metrics row per epoch), ``best_test_acc``.

Everything in it is a tensor, dict, list, tuple, str, int, float, bool or None; numpy values
are converted on the way in (:func:`weights_only_safe`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..rundir import CheckpointError, load_checkpoint, rng_state, save_checkpoint

__all__ = ["ROUTES", "classifier_state", "load_classifier_checkpoint", "save_classifier_checkpoint",
           "weights_only_safe"]

ROUTES = ("image", "structure")
# torch's own state dicts hold weights-only types already and keep loader metadata on their
# OrderedDicts (module versions), which a rebuilt plain dict would drop
_STATE_DICTS = ("model", "optimizer", "scheduler")
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def weights_only_safe(obj: Any, where: str = "checkpoint") -> Any:
    """``obj`` with numpy arrays as tensors, numpy scalars as Python numbers and paths as strings;
    any other type outside the weights-only set is a ``TypeError`` naming its place (``where``)."""
    if isinstance(obj, np.generic):  # before the plain types: np.float64 is a float, np.str_ a str
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {k: weights_only_safe(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: a {type(obj).__name__} cannot be stored in a weights-only checkpoint")


def classifier_state(route: str, cfg: dict[str, Any], class_names: Sequence[str], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int, history: list[dict[str, Any]],
                     best_test_acc: float) -> dict[str, Any]:
    """The checkpoint of a run after ``epoch`` (see the module docstring), RNG states taken now."""
    if route not in ROUTES:
        raise ValueError(f"classifier route must be one of {ROUTES}, got {route!r}")
    return {"route": route, "config": cfg, "class_names": [str(c) for c in class_names],
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": int(epoch), "rng": rng_state(), "history": history, "best_test_acc": float(best_test_acc)}


def save_classifier_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` (made weights-only safe) atomically as a ``classifier`` checkpoint."""
    safe = {k: v if k in _STATE_DICTS else weights_only_safe(v, k) for k, v in state.items()}
    return save_checkpoint(safe, path, kind="classifier")


def load_classifier_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                               route: str | None = None) -> dict[str, Any]:
    """Read a classifier checkpoint (weights only); ``route``: the route the caller needs (``None``: any).

    Raises:
        FileNotFoundError: no file at ``path``.
        dequiformer.rundir.CheckpointError: not a classifier checkpoint, of the other route, or
            lacking a key; the message names the file.
    """
    state = load_checkpoint(path, map_location=map_location, kind="classifier")
    if state.get("route") not in ROUTES:
        raise CheckpointError(f"{path}: classifier checkpoint without a 'route' entry ({ROUTES})")
    if route is not None and state["route"] != route:
        raise CheckpointError(f"{path}: a {state['route']} classifier checkpoint, but a {route} classifier "
                              "is needed here")
    for key in ("class_names", "epoch"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks key {key!r}")
    return state
