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
- ``metrics`` (rows of ``metrics.csv``), ``best`` (``{"epoch", "metric", "value", "stage"}``),
  ``world_size``, ``dtype``.

Everything in it loads with ``torch.load(weights_only=True)``: no pickled code. The file's
``kind`` is ``"force_field"`` (:mod:`dequiformer.rundir`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# the file format, atomic saving and validated loading live in the one run-directory module; they
# are importable from here too, where the force-field checkpoint's contents are described
from ..rundir import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "build_from_checkpoint", "cap_solver", "export_checkpoint", "load_checkpoint",
           "load_model", "save_checkpoint"]


def cap_solver(state: dict[str, Any], max_iter: int, where: str = "checkpoint") -> None:
    """Set a DEQ checkpoint's solve budget (``deq.max_iter``, and ``b_max_iter`` at least as
    large) in the loaded ``state``, before the model is built: a training config may keep it low
    for speed where evaluation wants converged fixed points. ValueError for an explicit model or a
    cap below 1 (``--max-iter`` of ``eval`` and ``refit-references``)."""
    if int(max_iter) < 1:
        raise ValueError(f"--max-iter must be >= 1, got {max_iter}")
    name = state["config"]["model"].get("name")
    if name != "dequiformer":
        raise ValueError(f"--max-iter: {where} is an explicit model ({name}), which has no solver")
    deq = state["config"].setdefault("deq", {})
    deq["max_iter"] = int(max_iter)
    deq["b_max_iter"] = max(int(max_iter), int(deq.get("b_max_iter") or 0))


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


def export_checkpoint(src: str | Path, dst: str | Path, use_ema: bool = True) -> Path:
    """Write an inference-only copy of a training checkpoint: the (EMA) weights, config,
    normalisation, units and elements; no optimizer, scheduler or RNG state. ``load_model``
    reads it like any checkpoint; it cannot be resumed."""
    state = load_checkpoint(src)
    model = build_from_checkpoint(state, use_ema=use_ema, where=str(src))
    keep = ("format", "version", "dequiformer_version", "config", "epoch", "step", "normalization", "units",
            "elements", "metrics", "best", "dtype", "refit_references")
    slim = {key: state[key] for key in keep if key in state}
    slim["model"] = model.state_dict()
    slim["ema"] = None
    slim["exported_from"] = str(src)
    return save_checkpoint(slim, dst)
