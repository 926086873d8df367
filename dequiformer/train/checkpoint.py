"""Checkpoints: atomic save, validated load, and :func:`load_model`.

A checkpoint (``last.pt`` / ``best.pt`` in a run directory) is a ``torch.save`` dict that alone
rebuilds the model and resumes training exactly:

- ``format`` (``"dequiformer-checkpoint"``), ``version``, ``dequiformer_version``,
- ``config``: the full resolved config (sections model, deq, data, train),
- ``model``: model ``state_dict`` (raw weights, including the output-scaling buffers),
- ``ema``: EMA state (``shadow`` weights) or ``None``,
- ``optimizer``, ``scheduler``: their state dicts; ``epoch``: completed epochs; ``step``,
- ``rng``: per-rank torch/CUDA RNG states and numpy/python RNG states,
- ``normalization``: :class:`~dequiformer.data.normalization.Normalizer` as a dict,
- ``units`` (``{"energy", "length"}``), ``elements`` (atomic numbers seen in training),
- ``metrics`` (rows of ``metrics.csv``), ``best`` (``{"epoch", "val_forces_mae"}``),
  ``world_size``, ``dtype``.

Everything in it loads with ``torch.load(weights_only=True)``: no pickled code.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "dequiformer-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("config", "model")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, or lacks what is needed."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``).

    A process killed during the write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint.

    Raises:
        FileNotFoundError: no file at ``path`` (a run directory resolves to ``last.pt`` in it).
        CheckpointError: the file is not a readable torch file, not a dequiformer checkpoint,
            or lacks a required key; the message names the file and the key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects...
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or not a torch file): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dequiformer checkpoint (no 'format': {FORMAT!r} entry)")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks key {key!r}")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this package "
                              f"understands ({VERSION})")
    return state


def build_from_checkpoint(state: dict[str, Any], use_ema: bool = True, dtype: torch.dtype | None = None,
                          device: str | torch.device = "cpu", where: str = "checkpoint") -> torch.nn.Module:
    """Model rebuilt from a loaded checkpoint dict, weights (EMA weights when present and
    ``use_ema``) loaded, in the training dtype (or ``dtype``), in eval mode."""
    from ..models import build_model
    from .settings import torch_dtype

    cfg = state["config"]
    model = build_model(cfg["model"], cfg.get("deq") or {})
    train_dtype = torch_dtype(state.get("dtype") or cfg.get("train", {}).get("dtype", "float32"))
    model = model.to(dtype=dtype or train_dtype)
    if hasattr(model, "scaling"):
        model.scaling.double()  # keep the statistics in full precision
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: weights do not fit the model its config describes: "
                              f"{str(exc).splitlines()[0]}") from None
    ema = state.get("ema")
    if use_ema and ema:
        params = dict(model.named_parameters())
        missing = sorted(set(params) - set(ema["shadow"]))
        if missing:
            raise CheckpointError(f"{where}: EMA weights lack parameter {missing[0]!r}")
        with torch.no_grad():
            for name, value in ema["shadow"].items():
                params[name].copy_(value)
    units = state.get("units")
    if units:
        model.hparams["energy_units"] = units.get("energy", model.hparams.get("energy_units"))
        model.hparams["length_units"] = units.get("length", model.hparams.get("length_units"))
    model.normalization = state.get("normalization")
    model.elements = list(state.get("elements") or [])
    model.config = cfg
    return model.to(device).eval()


def load_model(checkpoint_path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True,
               dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Rebuild a trained model from a checkpoint file (or a run directory: its ``last.pt``).

    Args:
        checkpoint_path: ``best.pt`` / ``last.pt`` written by ``dequiformer train``.
        device: where to put the model.
        use_ema: load the EMA weights when the run kept them (default), else the raw weights.
        dtype: parameter dtype (default: the training dtype, ``train.dtype``).

    Returns:
        The model in eval mode; ``model.hparams["energy_units"]`` / ``["length_units"]`` are the
        training units (``model.units``), ``model.normalization`` the fitted statistics,
        ``model.elements`` the atomic numbers seen in training, ``model.config`` the config.

    Raises:
        FileNotFoundError: missing file; CheckpointError: corrupt or incomplete checkpoint.
    """
    state = load_checkpoint(checkpoint_path)
    return build_from_checkpoint(state, use_ema=use_ema, dtype=dtype, device=device, where=str(checkpoint_path))


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, numpy global, python) in weights-only types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def export_checkpoint(src: str | Path, dst: str | Path, use_ema: bool = True) -> Path:
    """Write an inference-only copy of a training checkpoint: the (EMA) weights, config,
    normalisation, units and elements; no optimizer, scheduler or RNG state. ``load_model``
    reads it like any checkpoint; it cannot be resumed."""
    state = load_checkpoint(src)
    model = build_from_checkpoint(state, use_ema=use_ema, where=str(src))
    keep = ("format", "version", "dequiformer_version", "config", "epoch", "step", "normalization", "units",
            "elements", "metrics", "best", "dtype")
    slim = {key: state[key] for key in keep if key in state}
    slim["model"] = model.state_dict()
    slim["ema"] = None
    slim["exported_from"] = str(src)
    return save_checkpoint(slim, dst)
