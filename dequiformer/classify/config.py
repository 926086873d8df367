"""The classifier config sections: defaults, resolution and checks (errors name ``section.key``).

Two routes read the same four sections (``model``, ``deq``, ``data``, ``train``):

* image route (``model.name: deq_conv``, the default): ``model`` and ``deq`` are
  :data:`dequiformer.models.deq_conv.MODEL_DEFAULTS` / ``DEQ_DEFAULTS``; ``num_classes``,
  ``image_size`` and ``in_channels`` may be ``null`` (taken from the data).
* structure route (``model.name`` in :data:`STRUCTURE_MODELS`, ``task: classification``):
  ``model`` is :data:`dequiformer.models.hparams.DEFAULTS` (``num_classes`` and ``avg_degree``
  may be ``null``), ``deq`` is resolved by :func:`dequiformer.models.dequiformer.resolve_deq`.

``data`` and ``train`` defaults are per route (:data:`IMAGE_DATA_DEFAULTS`,
:data:`IMAGE_TRAIN_DEFAULTS`, :data:`STRUCTURE_DATA_DEFAULTS`, :data:`STRUCTURE_TRAIN_DEFAULTS`).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch

from ..models.deq_conv import DEQ_DEFAULTS as IMAGE_DEQ_DEFAULTS
from ..models.deq_conv import MODEL_DEFAULTS as IMAGE_MODEL_DEFAULTS
from ..models.dequiformer import resolve_deq
from ..models.hparams import DEFAULTS as STRUCTURE_MODEL_DEFAULTS

__all__ = [
    "DTYPES", "IMAGE_DATA_DEFAULTS", "IMAGE_TRAIN_DEFAULTS", "STRUCTURE_DATA_DEFAULTS", "STRUCTURE_MODELS",
    "STRUCTURE_TRAIN_DEFAULTS", "fill_section", "resolve_device", "resolve_image_config",
    "resolve_structure_config", "uses_structure_route",
]

STRUCTURE_MODELS = ("dequiformer", "equiformer_v2")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

IMAGE_DATA_DEFAULTS: dict[str, Any] = {
    "path": None,            # ImageDataset .npz or cifar-10-batches-py folder
    "format": "auto",        # auto | npz | cifar10
    "test_fraction": 0.2,    # npz only
    "split_seed": 0,         # npz only
    "limit": None,           # use at most this many training images
    "test_limit": None,      # and this many test images
    "augment": False,        # random 4-pixel-padded crops + horizontal flips (natural images only)
}
IMAGE_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 64,
    "eval_batch_size": None,  # default: batch_size
    "lr": 1e-3,
    "min_lr": 0.0,            # cosine floor at the last step
    "weight_decay": 0.0,
    "seed": 0,                # model init and batch order
    "target_accuracy": 0.9,   # train accuracy whose first crossing bench times
    "device": "auto",         # auto | cpu | cuda | cuda:K
    "num_threads": None,      # torch CPU threads (None: torch's default)
    "max_steps_per_epoch": None,
    "progress": True,
}
STRUCTURE_DATA_DEFAULTS: dict[str, Any] = {
    "path": None,                   # extxyz (or any ASE-readable) file, one frame per structure
    "format": None,                 # ase.io format name (None: from the file name)
    "label_key": "label",           # atoms.info key of the integer class
    "label_name_key": "label_name",  # optional atoms.info key of the class name
    "id_key": "id",                 # optional atoms.info key of the structure id (default: frame index)
    "class_names": None,            # list of names; default from label_name_key, else class_<k>
    "test_fraction": 0.2,
    "split_seed": 0,
    "limit": None,                  # use at most this many training structures
    "test_limit": None,             # and this many test structures
}
STRUCTURE_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "eval_batch_size": None,  # default: batch_size
    "lr": 1e-3,
    "min_lr": 0.0,
    "weight_decay": 0.0,
    "grad_clip": None,        # max gradient norm (None: no clipping)
    "seed": 0,                # model init, dropout and batch order
    "target_accuracy": 0.9,
    "device": "auto",
    "dtype": "float32",       # float32 | float64
    "num_threads": None,
    "max_steps_per_epoch": None,
    "progress": True,
}
_IMAGE_SHAPE_KEYS = ("num_classes", "image_size", "in_channels")  # may be taken from the data


def fill_section(section: str, given: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated by ``given`` (a deep copy); an unknown key is an error naming the section."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {section} config key(s) {unknown}; valid keys: {sorted(defaults)}")
    return {**copy.deepcopy(dict(defaults)), **given}


def _coerce_numbers(cfg: dict, keys: Mapping[str, Sequence[str]]) -> None:
    """Read string numbers as floats in place: YAML 1.1 reads ``1e-3`` (no dot) as a string."""
    for section, names in keys.items():
        for key in names:
            value = cfg[section][key]
            if isinstance(value, str):
                try:
                    cfg[section][key] = float(value)
                except ValueError:
                    raise ValueError(f"{section}.{key} must be a number, got {value!r}") from None


def _check_common(cfg: dict) -> None:
    t, d = cfg["train"], cfg["data"]
    for key in ("epochs", "batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if not 0.0 <= float(d["test_fraction"]) < 1.0:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {d['test_fraction']!r}")
    if not 0.0 < float(t["target_accuracy"]) <= 1.0:
        raise ValueError(f"train.target_accuracy must be in (0, 1], got {t['target_accuracy']!r}")


def uses_structure_route(cfg: Mapping[str, Any]) -> bool:
    """True when ``cfg["model"]["name"]`` is a 3D-structure model (``dequiformer``, ``equiformer_v2``)."""
    return (cfg.get("model") or {}).get("name") in STRUCTURE_MODELS


def resolve_image_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The image route's four sections with defaults filled and values checked."""
    model = fill_section("model", cfg.get("model"), IMAGE_MODEL_DEFAULTS)
    for key in _IMAGE_SHAPE_KEYS:
        if key not in (cfg.get("model") or {}):
            model[key] = None
    out = {"model": model, "deq": fill_section("deq", cfg.get("deq"), IMAGE_DEQ_DEFAULTS),
           "data": fill_section("data", cfg.get("data"), IMAGE_DATA_DEFAULTS),
           "train": fill_section("train", cfg.get("train"), IMAGE_TRAIN_DEFAULTS)}
    _coerce_numbers(out, {"train": ("lr", "min_lr", "weight_decay", "target_accuracy"),
                          "deq": ("tol", "lam", "beta", "damping", "b_tol"), "data": ("test_fraction",)})
    _check_common(out)
    if out["data"]["format"] not in ("auto", "npz", "cifar10"):
        raise ValueError(f"data.format must be auto, npz or cifar10, got {out['data']['format']!r}")
    return out


def _structure_model_section(given: Mapping[str, Any] | None) -> dict[str, Any]:
    model = dict(given or {})
    if model.get("name") not in STRUCTURE_MODELS:
        raise ValueError(f"model.name must be one of {STRUCTURE_MODELS} for structure classification, "
                         f"got {model.get('name')!r}")
    if model.get("task") != "classification":
        raise ValueError(f"model.task must be 'classification' to classify structures with {model['name']} "
                         f"(got {model.get('task', STRUCTURE_MODEL_DEFAULTS['task'])!r}); "
                         "add task: classification to the model section")
    unknown = sorted(set(model) - set(STRUCTURE_MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(STRUCTURE_MODEL_DEFAULTS)}")
    # keys left out are filled by build_model (dequiformer.models.hparams); these two come from the data
    model.setdefault("num_classes", None)
    model.setdefault("avg_degree", None)
    return model


def resolve_structure_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The structure route's four sections with defaults filled and values checked."""
    out = {"model": _structure_model_section(cfg.get("model")), "deq": resolve_deq(cfg.get("deq")),
           "data": fill_section("data", cfg.get("data"), STRUCTURE_DATA_DEFAULTS),
           "train": fill_section("train", cfg.get("train"), STRUCTURE_TRAIN_DEFAULTS)}
    _coerce_numbers(out, {"train": ("lr", "min_lr", "weight_decay", "target_accuracy", "grad_clip"),
                          "data": ("test_fraction",), "deq": ("tol", "reuse_tol", "b_tol")})
    _check_common(out)
    t, d = out["train"], out["data"]
    if t["dtype"] not in DTYPES:
        raise ValueError(f"train.dtype must be one of {sorted(DTYPES)}, got {t['dtype']!r}")
    if d["class_names"] is not None and (not isinstance(d["class_names"], list) or len(d["class_names"]) < 2):
        raise ValueError(f"data.class_names must be a list of at least two names, got {d['class_names']!r}")
    return out


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else CPU; anything else as ``torch.device`` reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
