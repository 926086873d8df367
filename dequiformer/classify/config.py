"""The classifier config sections: defaults, resolution and checks (errors name ``section.key``).

Two routes read the same four sections (``model``, ``deq``, ``data``, ``train``):

* image route (``model.name: deq_conv``, the default): ``model`` and ``deq`` are
  :data:`dequiformer.models.deq_conv.MODEL_SCHEMA` / ``DEQ_SCHEMA``; ``num_classes``,
  ``image_size`` and ``in_channels`` may be ``null`` (taken from the data).
* structure route (``model.name`` in :data:`STRUCTURE_MODELS`, ``task: classification``):
  ``model`` is :data:`dequiformer.models.hparams.DEFAULTS` (``num_classes`` and ``avg_degree``
  may be ``null``), ``deq`` is resolved by :func:`dequiformer.models.dequiformer.resolve_deq`.

``data`` and ``train`` schemas are per route (:data:`IMAGE_DATA_SCHEMA`, :data:`IMAGE_TRAIN_SCHEMA`,
:data:`STRUCTURE_DATA_SCHEMA`, :data:`STRUCTURE_TRAIN_SCHEMA`; :mod:`dequiformer.schema`).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch

from ..models.deq_conv import MODEL_SCHEMA as IMAGE_MODEL_SCHEMA
from ..models.deq_conv import resolve_conv_deq
from ..models.dequiformer import resolve_deq
from ..models.hparams import DEFAULTS as STRUCTURE_MODEL_DEFAULTS
from ..schema import Option, defaults, resolve_section

__all__ = [
    "DTYPES", "IMAGE_DATA_DEFAULTS", "IMAGE_TRAIN_DEFAULTS", "STRUCTURE_DATA_DEFAULTS", "STRUCTURE_MODELS",
    "STRUCTURE_TRAIN_DEFAULTS", "IMAGE_DATA_SCHEMA", "IMAGE_TRAIN_SCHEMA", "STRUCTURE_DATA_SCHEMA",
    "STRUCTURE_TRAIN_SCHEMA", "resolve_image_config",
    "resolve_structure_config", "uses_structure_route",
]

STRUCTURE_MODELS = ("dequiformer", "equiformer_v2")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

_FRACTION = {"low": 0.0, "high": 1.0, "high_open": True}
_LIMIT = {"nullable": True, "low": 1}


def _at_least_two(names: list) -> list:
    if len(names) < 2:
        raise ValueError(f"must list at least two names, got {names!r}")
    return names


IMAGE_DATA_SCHEMA: dict[str, Option] = {
    "path": Option(None, nullable=True),              # ImageDataset .npz or cifar-10-batches-py folder
    "format": Option("auto", str, choices=("auto", "npz", "cifar10")),
    "test_fraction": Option(0.2, float, **_FRACTION),  # npz only
    "split_seed": Option(0, int),                     # npz only
    # regular expression on the ids: samples with the same match (or first group) share a side
    # of the split, e.g. "^[^:]+:[^:]+" (prototype:formula) for the crystal set (npz only)
    "split_group": Option(None, str, nullable=True),
    "limit": Option(None, int, **_LIMIT),             # use at most this many training images
    "test_limit": Option(None, int, **_LIMIT),        # and this many test images
    "augment": Option(False, bool),                   # random 4-pixel-padded crops + flips (natural images only)
}
_TRAIN_COMMON: dict[str, Option] = {
    "epochs": Option(10, int, low=1),
    "eval_batch_size": Option(None, int, **_LIMIT),   # default: batch_size
    "lr": Option(1e-3, float, low=0.0),
    "min_lr": Option(0.0, float, low=0.0),            # cosine floor at the last step
    "weight_decay": Option(0.0, float, low=0.0),
    "seed": Option(0, int),                           # model init, dropout and batch order
    "target_accuracy": Option(0.9, float, low=0.0, high=1.0, low_open=True),  # train accuracy bench times
    "device": Option("auto", str),                    # auto | cpu | cuda | cuda:K
    "num_threads": Option(None, int, **_LIMIT),       # torch CPU threads (None: torch's default)
    "max_steps_per_epoch": Option(None, int, **_LIMIT),
    "progress": Option(True, bool),
}
IMAGE_TRAIN_SCHEMA: dict[str, Option] = {**_TRAIN_COMMON, "batch_size": Option(64, int, low=1)}
STRUCTURE_DATA_SCHEMA: dict[str, Option] = {
    "path": Option(None, nullable=True),              # extxyz (or any ASE-readable) file, one frame per structure
    "format": Option(None, str, nullable=True),       # ase.io format name (None: from the file name)
    "label_key": Option("label", str),                # atoms.info key of the integer class
    "label_name_key": Option("label_name", str),      # optional atoms.info key of the class name
    "id_key": Option("id", str),                      # optional atoms.info key of the structure id
    "class_names": Option(None, list, nullable=True, check=_at_least_two),  # default: from the data
    "test_fraction": Option(0.2, float, **_FRACTION),
    "split_seed": Option(0, int),
    "split_group": Option(None, str, nullable=True),  # as for images: regex on the ids, whole groups per side
    "limit": Option(None, int, **_LIMIT),             # use at most this many training structures
    "test_limit": Option(None, int, **_LIMIT),        # and this many test structures
}
STRUCTURE_TRAIN_SCHEMA: dict[str, Option] = {
    **_TRAIN_COMMON,
    "batch_size": Option(32, int, low=1),
    "grad_clip": Option(None, float, nullable=True, low=0.0, low_open=True),  # max gradient norm (None: off)
    "dtype": Option("float32", str, choices=tuple(DTYPES)),
}
IMAGE_DATA_DEFAULTS = defaults(IMAGE_DATA_SCHEMA)
IMAGE_TRAIN_DEFAULTS = defaults(IMAGE_TRAIN_SCHEMA)
STRUCTURE_DATA_DEFAULTS = defaults(STRUCTURE_DATA_SCHEMA)
STRUCTURE_TRAIN_DEFAULTS = defaults(STRUCTURE_TRAIN_SCHEMA)
_IMAGE_SHAPE_KEYS = ("num_classes", "image_size", "in_channels")  # may be taken from the data


def uses_structure_route(cfg: Mapping[str, Any]) -> bool:
    """True when ``cfg["model"]["name"]`` is a 3D-structure model (``dequiformer``, ``equiformer_v2``)."""
    return (cfg.get("model") or {}).get("name") in STRUCTURE_MODELS


def resolve_image_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The image route's four sections with defaults filled and values checked."""
    model = resolve_section("model", cfg.get("model"), IMAGE_MODEL_SCHEMA)
    for key in _IMAGE_SHAPE_KEYS:
        if key not in (cfg.get("model") or {}):
            model[key] = None
    return {"model": model, "deq": resolve_conv_deq(cfg.get("deq")),
            "data": resolve_section("data", cfg.get("data"), IMAGE_DATA_SCHEMA),
            "train": resolve_section("train", cfg.get("train"), IMAGE_TRAIN_SCHEMA)}


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
    return {"model": _structure_model_section(cfg.get("model")), "deq": resolve_deq(cfg.get("deq")),
            "data": resolve_section("data", cfg.get("data"), STRUCTURE_DATA_SCHEMA),
            "train": resolve_section("train", cfg.get("train"), STRUCTURE_TRAIN_SCHEMA)}


