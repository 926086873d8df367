"""Training: trainer, losses, schedules, EMA, checkpoints, distributed (torchrun) helpers.

Names are imported lazily so that ``dequiformer.load_model`` does not pull in the trainer.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "Trainer": "dequiformer.train.trainer",
    "parameter_groups": "dequiformer.train.optimizer",
    "ForceFieldLoss": "dequiformer.train.losses",
    "CosineWarmupSchedule": "dequiformer.train.schedules",
    "cosine_warmup_lr": "dequiformer.train.schedules",
    "ExponentialMovingAverage": "dequiformer.train.ema",
    "CheckpointError": "dequiformer.train.checkpoint",
    "load_checkpoint": "dequiformer.train.checkpoint",
    "load_model": "dequiformer.train.checkpoint",
    "save_checkpoint": "dequiformer.train.checkpoint",
    "GraphDataset": "dequiformer.train.dataset",
    "epoch_batches": "dequiformer.train.dataset",
    "evaluate": "dequiformer.train.evaluate",
    "resolve_train": "dequiformer.train.settings",
    "TRAIN_DEFAULTS": "dequiformer.train.settings",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
