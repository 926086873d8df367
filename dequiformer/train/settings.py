"""The ``train`` config section: defaults, validation, and the ``auto`` model statistics.

Units: learning rates are per optimizer step; ``warmup_epochs`` is in epochs (fractions
allowed, e.g. OC20's 0.1), ``warmup_fraction`` a fraction of all training steps; loss
weights are dimensionless (losses are computed on normalised quantities).
"""
from __future__ import annotations

import copy
import re
import warnings
from typing import Any

import torch

from ..data.normalization import MODES, SCALES
from ..device import DEVICE_CHOICES
from ..schema import MISSING, Option, defaults, resolve_section

def _device(value: str) -> str:
    # the spelling only: whether this machine has the device is dequiformer.device's question,
    # asked when a run starts (a config written for a GPU machine still checks on a laptop)
    if value not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", value):
        raise ValueError(f"must be {DEVICE_CHOICES}, got {value!r}")
    return value


def _loss(value: str) -> str:
    from .losses import LOSS_ALIASES, loss_name

    try:
        loss_name(value)  # the one lookup of loss names and aliases
    except ValueError:
        raise ValueError(f"must be one of {', '.join(sorted(LOSS_ALIASES))}, got {value!r}") from None
    return value


def _scale(value: Any) -> Any:
    if value in SCALES or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError(f"must be one of {', '.join(SCALES)} or a positive number, got {value!r}")


_NONNEG = {"low": 0.0}
TRAIN_SCHEMA: dict[str, Option] = {
    "seed": Option(1, int),
    "dtype": Option("float32", str, choices=("float32", "float64")),
    "device": Option("auto", str, check=_device),           # auto | cpu | cuda | cuda:K | mps
    "num_threads": Option(None, int, nullable=True, low=1),  # torch intra-op CPU threads (None: torch's default)
    "epochs": Option(100, int, low=1),
    "batch_size": Option(4, int, low=1),                    # structures per process and step
    "eval_batch_size": Option(None, int, nullable=True, low=1),  # default: batch_size
    "optimizer": Option("adamw", str, choices=("adamw",)),
    "lr": Option(5e-4, float, **_NONNEG),                   # peak learning rate
    "warmup_lr": Option(1e-6, float, **_NONNEG),            # learning rate at step 0
    "min_lr": Option(1e-6, float, **_NONNEG),               # learning rate at the last step (cosine floor)
    "warmup_epochs": Option(0.0, float, **_NONNEG),         # linear warmup length in epochs (may be fractional)
    "warmup_fraction": Option(None, float, nullable=True, low=0.0, high=1.0),  # or: fraction of all steps
    "weight_decay": Option(0.0, float, **_NONNEG),
    "betas": Option([0.9, 0.999], list),
    "eps": Option(1e-8, float, low=0.0, low_open=True),
    "no_weight_decay": Option(["norm", "bias", "embedding"], list),  # parameter groups exempt from decay
    "clip_grad_norm": Option(None, float, nullable=True, **_NONNEG),  # max total gradient norm (None or 0: off)
    "energy_loss": Option("l2mae", str, check=_loss),       # l2mae | mae | mse (+ aliases l1, l2)
    "energy_weight": Option(1.0, float, **_NONNEG),
    "force_loss": Option("l2mae", str, check=_loss),
    "force_weight": Option(80.0, float, **_NONNEG),
    "grad_force_weight": Option(0.0, float, **_NONNEG),     # force loss on -dE/dpos as well (teaches a direct model its energy)
    "grad_force_every": Option(1, int, low=1),              # that loss on every K-th optimizer step only (its double backward is most of a step)
    "stress_weight": Option(0.0, float, **_NONNEG),         # stress loss (batches whose frames all carry a stress label)
    "init_from": Option(None, str, nullable=True),          # checkpoint whose (EMA) weights and normalisation start this run
    "ema_decay": Option(None, float, nullable=True, low=0.0, high=1.0, low_open=True, high_open=True),  # e.g. 0.999
    "eval_every": Option(1, int, low=1),                    # validate every N epochs (and always at the last)
    "max_steps_per_epoch": Option(None, int, nullable=True, low=1),  # cap for smoke tests
    "find_unused_parameters": Option(True, bool),
    "progress": Option(True, bool),                         # tqdm bar on rank 0
    "tensorboard": Option(True, bool),                      # when torch.utils.tensorboard imports
    "log_every": Option(0, int, low=0),                     # print a line every N steps (0: only per epoch)
    "checkpoint_every": Option(0, int, low=0),              # also write last.pt every N optimizer steps (0: per epoch)
    "max_seconds": Option(None, float, nullable=True, low=0.0, low_open=True),  # wall budget: stop after the epoch that exhausts it
    # cosine decay over train.epochs ("epochs") or over train.max_seconds ("seconds": the run then
    # stops as soon as the budget is spent, mid-epoch if need be, at min_lr)
    "lr_schedule": Option("epochs", str, choices=("epochs", "seconds")),
    # MACE's second stage (its --swa): from `start` (a fraction of the run, in steps or, under
    # lr_schedule: seconds, in wall time) on, these loss weights replace the ones above (null:
    # unchanged) and best.pt restarts, so that it is the stage's best; start null: no second stage.
    # forces: conservative turns a direct-force model into a conservative one for the stage
    # (direct pre-training, then -dE/dpos fine-tuning in the same run; the force loss then acts
    # on -dE/dpos, grad_force_weight is dropped and the checkpoints of the stage are conservative)
    "stage_two": Option(None, dict, fields={
        "forces": Option(None, str, nullable=True, choices=("conservative",)),
        "start": Option(None, float, nullable=True, low=0.0, high=1.0, low_open=True, high_open=True),
        "energy_weight": Option(None, float, nullable=True, **_NONNEG),
        "force_weight": Option(None, float, nullable=True, **_NONNEG),
        "grad_force_weight": Option(None, float, nullable=True, **_NONNEG),
    }),
    # which validation error picks best.pt: forces, energy, or energy+forces (the sum of the two
    # MAEs in the data's units: energy per structure, forces per component)
    "best_metric": Option("forces", str, choices=("forces", "energy", "energy+forces")),
    "fixed_point_store_mb": Option(512.0, float, **_NONNEG),  # DEQ: warm-start each frame's solve from its last fixed point (0: off)
    "jacobian_iters": Option(10, int, low=0),               # DEQ: power iterations for the validation Jacobian radius (0: off)
}
TRAIN_DEFAULTS: dict[str, Any] = defaults(TRAIN_SCHEMA)

#: the ``data`` section of a force-field config: keys read by
#: :func:`dequiformer.data.splits.datasets_from_config` (left out when absent: it has its own
#: fallbacks) plus the normalisation and graph cache
DATA_SCHEMA: dict[str, Option] = {
    "path": Option(MISSING),              # file or folder (str or Path)
    "format": Option(MISSING, str, nullable=True),
    "options": Option(MISSING, dict, nullable=True),  # reader options (checked by the reader, by name)
    "val_path": Option(MISSING, nullable=True),
    "test_path": Option(MISSING, nullable=True),
    "n_train": Option(MISSING, nullable=True),
    "n_val": Option(MISSING, int, nullable=True, low=0),
    "n_test": Option(MISSING, nullable=True),
    "seed": Option(MISSING, int),
    "rmd17_split": Option(MISSING, nullable=True),
    "splits_dir": Option(MISSING, nullable=True),
    "normalization": Option(None, dict, fields={
        "mode": Option("per_atom", str, choices=MODES),
        "scale": Option("energy_std", check=_scale),  # a name of SCALES or a positive number (energy unit)
        "max_frames": Option(10000, int, low=1),
    }),
    "cache_graphs": Option(True, bool),
}

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_train(train_cfg: dict | None) -> dict:
    """The ``train`` section with defaults filled and values checked (:data:`TRAIN_SCHEMA`);
    errors name ``train.<key>``."""
    train = resolve_section("train", train_cfg, TRAIN_SCHEMA)
    if train["lr_schedule"] == "seconds" and train["max_seconds"] is None:
        raise ValueError("train.lr_schedule: seconds decays the learning rate over train.max_seconds, "
                         "which is not set")
    if train["lr_schedule"] == "seconds" and train["warmup_fraction"] is not None:
        raise ValueError("train.warmup_fraction is a fraction of all steps, unknown under train.lr_schedule: "
                         "seconds; set train.warmup_epochs instead")
    two = train["stage_two"]
    if two["start"] is None and any(two[k] is not None for k in two if k != "start"):
        raise ValueError("train.stage_two sets loss weights or forces but no train.stage_two.start (the fraction of "
                         "the run where the second stage begins, e.g. 0.75)")
    if two["start"] is not None and all(two[k] is None for k in two if k != "start"):
        raise ValueError("train.stage_two.start is set but the stage changes no loss weight; set "
                         "train.stage_two.energy_weight, force_weight, grad_force_weight or forces")
    if two["forces"] is not None and two["grad_force_weight"]:
        raise ValueError("train.stage_two.grad_force_weight: with stage_two.forces: conservative the force loss "
                         "is on -dE/dpos already; leave it null or 0")
    return train


def resolve_data_extras(data_cfg: dict) -> dict:
    """The ``data`` section checked (:data:`DATA_SCHEMA`), ``normalization`` and ``cache_graphs``
    filled with their defaults (the other keys are left out when absent)."""
    return resolve_section("data", data_cfg or {}, DATA_SCHEMA)


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


def resolve_run_config(cfg: dict, units: dict[str, str], train_graphs: Any) -> dict:
    """Config as written to ``config.yaml``: model and deq sections with every default filled,
    training units recorded in ``model.energy_units``/``length_units``, ``auto`` statistics measured."""
    from ..models.dequiformer import resolve_deq
    from ..models.hparams import resolve
    from .dataset import graph_statistics

    cfg = copy.deepcopy(cfg)
    model_cfg = dict(cfg["model"])
    for key in ("energy_units", "length_units"):
        given, data_unit = model_cfg.get(key), units["energy" if key == "energy_units" else "length"]
        if given is not None and given != data_unit:
            warnings.warn(f"model.{key}={given!r} differs from the data's {data_unit!r}; the model trains in the "
                          f"data's units", stacklevel=2)
        model_cfg[key] = data_unit
    auto = [k for k in ("avg_num_nodes", "avg_degree") if model_cfg.get(k) == "auto"]
    if auto:
        if train_graphs is None:
            raise ValueError(f"model.{auto[0]}: 'auto' needs the training data")
        stats = graph_statistics(train_graphs)
        for key in auto:
            model_cfg[key] = float(stats[key])
    cfg["model"] = resolve(model_cfg)
    if cfg["model"]["name"] == "dequiformer":
        cfg["deq"] = resolve_deq(cfg.get("deq"))
    cfg["train"] = resolve_train(cfg.get("train"))
    cfg["data"] = resolve_data_extras(cfg.get("data") or {})
    return cfg
