"""The ``train`` config section: defaults, validation, and the ``auto`` model statistics.

Units: learning rates are per optimizer step; ``warmup_epochs`` is in epochs (fractions
allowed, e.g. OC20's 0.1), ``warmup_fraction`` a fraction of all training steps; loss
weights are dimensionless (losses are computed on normalised quantities).
"""
from __future__ import annotations

import copy
import re
from typing import Any

import torch

TRAIN_DEFAULTS: dict[str, Any] = {
    "seed": 1,
    "dtype": "float32",            # float32 | float64
    "device": "auto",              # auto | cpu | cuda | cuda:K
    "num_threads": None,           # torch intra-op CPU threads (None: torch's default)
    "epochs": 100,
    "batch_size": 4,               # structures per process and step
    "eval_batch_size": None,       # default: batch_size
    "optimizer": "adamw",
    "lr": 5e-4,                    # peak learning rate
    "warmup_lr": 1e-6,             # learning rate at step 0
    "min_lr": 1e-6,                # learning rate at the last step (cosine floor)
    "warmup_epochs": 0.0,          # linear warmup length in epochs (may be fractional)
    "warmup_fraction": None,       # or: warmup as a fraction of all steps (overrides warmup_epochs)
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "no_weight_decay": ["norm", "bias", "embedding"],  # parameter groups exempt from decay
    "clip_grad_norm": None,        # max total gradient norm (None or 0: off)
    "energy_loss": "l2mae",        # l2mae | mae | mse (+ aliases l1, l2)
    "energy_weight": 1.0,
    "force_loss": "l2mae",
    "force_weight": 80.0,
    "grad_force_weight": 0.0,      # force loss on -dE/dpos as well (teaches a direct model its energy)
    "stress_weight": 0.0,          # stress loss (batches whose frames all carry a stress label)
    "init_from": None,             # checkpoint whose (EMA) weights and normalisation start this run
    "ema_decay": None,             # e.g. 0.999; None: no EMA
    "eval_every": 1,               # validate every N epochs (and always at the last)
    "max_steps_per_epoch": None,   # cap for smoke tests
    "find_unused_parameters": True,
    "progress": True,              # tqdm bar on rank 0
    "tensorboard": True,           # when torch.utils.tensorboard imports
    "log_every": 0,                # print a line every N steps (0: only per epoch)
    "checkpoint_every": 0,         # also write last.pt every N optimizer steps, resumable mid-epoch (0: per epoch)
    "max_seconds": None,           # stop after the epoch that exhausts this wall-clock budget (None: off)
    "fixed_point_store_mb": 512,   # DEQ: warm-start each frame's solve from its last fixed point (0: off)
    "jacobian_iters": 10,          # DEQ: power iterations for the validation Jacobian radius (0: off)
}


DATA_EXTRA_DEFAULTS: dict[str, Any] = {
    "normalization": {"mode": "per_atom", "scale": "energy_std", "max_frames": 10000},
    "cache_graphs": True,
}

#: ``data`` keys read by :func:`dequiformer.data.splits.datasets_from_config` plus the two above.
DATA_KEYS = frozenset({"path", "format", "options", "val_path", "test_path", "n_train", "n_val", "n_test", "seed",
                       "rmd17_split", "splits_dir", *DATA_EXTRA_DEFAULTS})

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_train(train_cfg: dict | None) -> dict:
    """Fill the ``train`` section's defaults and check values; errors name ``train.<key>``."""
    cfg = copy.deepcopy(TRAIN_DEFAULTS)
    for key, value in (train_cfg or {}).items():
        if key not in TRAIN_DEFAULTS:
            raise ValueError(f"unknown train config key {key!r}; valid keys: {sorted(TRAIN_DEFAULTS)}")
        cfg[key] = value
    if cfg["dtype"] not in DTYPES:
        raise ValueError(f"train.dtype must be one of {sorted(DTYPES)}, got {cfg['dtype']!r}")
    if str(cfg["optimizer"]).lower() != "adamw":
        raise ValueError(f"train.optimizer: only 'adamw' is supported, got {cfg['optimizer']!r}")
    for key in ("epochs", "batch_size"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {cfg[key]!r}")
    for key in ("lr", "warmup_lr", "min_lr"):
        if not isinstance(cfg[key], (int, float)) or float(cfg[key]) < 0:
            raise ValueError(f"train.{key} must be a non-negative number, got {cfg[key]!r}")
    if float(cfg["warmup_epochs"] or 0) < 0:
        raise ValueError(f"train.warmup_epochs must be >= 0, got {cfg['warmup_epochs']!r}")
    wf = cfg["warmup_fraction"]
    if wf is not None and not 0.0 <= float(wf) <= 1.0:
        raise ValueError(f"train.warmup_fraction must be in [0, 1], got {wf!r}")
    nt = cfg["num_threads"]
    if nt is not None and (not isinstance(nt, int) or isinstance(nt, bool) or nt < 1):
        raise ValueError(f"train.num_threads must be a positive integer or null, got {nt!r}")
    ema = cfg["ema_decay"]
    if ema is not None and not 0.0 < float(ema) < 1.0:
        raise ValueError(f"train.ema_decay must be in (0, 1) or null, got {ema!r}")
    ms = cfg["max_seconds"]
    if ms is not None and (not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms <= 0):
        raise ValueError(f"train.max_seconds must be a positive number or null, got {ms!r}")
    device = str(cfg["device"])
    if device not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", device):
        raise ValueError(f"train.device must be auto, cpu, cuda, cuda:K or mps, got {cfg['device']!r}")
    ce = cfg["checkpoint_every"]
    if not isinstance(ce, int) or isinstance(ce, bool) or ce < 0:
        raise ValueError(f"train.checkpoint_every must be a non-negative integer (optimizer steps), got {ce!r}")
    for key in ("fixed_point_store_mb", "jacobian_iters"):
        if not isinstance(cfg[key], (int, float)) or isinstance(cfg[key], bool) or cfg[key] < 0:
            raise ValueError(f"train.{key} must be a non-negative number, got {cfg[key]!r}")
    if float(cfg["stress_weight"]) < 0 or float(cfg["grad_force_weight"]) < 0:
        raise ValueError("train.stress_weight and train.grad_force_weight must be >= 0")
    if cfg["init_from"] is not None and not isinstance(cfg["init_from"], str):
        raise ValueError(f"train.init_from must be a checkpoint path or null, got {cfg['init_from']!r}")
    from .losses import loss_name

    for key in ("energy_loss", "force_loss"):
        loss_name(cfg[key], f"train.{key}")
    return cfg


def resolve_data_extras(data_cfg: dict) -> dict:
    """``data.normalization`` / ``data.cache_graphs`` with defaults (other data keys untouched)."""
    out = dict(data_cfg or {})
    unknown = sorted(set(out) - DATA_KEYS)
    if unknown:
        raise ValueError(f"unknown data config key(s) {unknown}; valid keys: {sorted(DATA_KEYS)}")
    norm = dict(DATA_EXTRA_DEFAULTS["normalization"])
    given = out.get("normalization") or {}
    if not isinstance(given, dict):
        raise ValueError(f"data.normalization must be a mapping, got {given!r}")
    bad = sorted(set(given) - set(norm))
    if bad:
        raise ValueError(f"unknown key(s) {bad} in data.normalization; valid: {sorted(norm)}")
    norm.update(given)
    out["normalization"] = norm
    out.setdefault("cache_graphs", DATA_EXTRA_DEFAULTS["cache_graphs"])
    return out


def check_config(cfg: dict) -> None:
    """Validate a whole config without touching data: sections, model/deq/train keys.

    Raises ValueError naming the section or key. ``model.avg_num_nodes`` / ``avg_degree``
    may be ``auto`` (measured on the training set when training starts).
    """
    from ..models.dequiformer import resolve_deq
    from ..models.hparams import resolve

    for section in ("model", "deq", "data", "train"):
        if not isinstance(cfg.get(section), dict):
            raise ValueError(f"config section {section!r} is missing or not a mapping")
    model_cfg = {k: (1.0 if v == "auto" and k in ("avg_num_nodes", "avg_degree") else v)
                 for k, v in cfg["model"].items()}
    resolve(model_cfg)
    if model_cfg.get("name", "equiformer_v2") == "dequiformer":
        resolve_deq(cfg["deq"])
    resolve_train(cfg["train"])
    resolve_data_extras(cfg["data"])


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` / ``"float64"`` -> torch dtype (error names ``train.dtype``)."""
    if name not in DTYPES:
        raise ValueError(f"train.dtype must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]
