"""Graph-level classifiers: train, predict and benchmark on graph images or on 3D structures.

Modules:

* :mod:`.config`: the ``model`` / ``deq`` / ``data`` / ``train`` sections of both routes.
* :mod:`.splits`: train / test splits of images and of labelled structures (one split rule).
* :mod:`.loop`: the one training loop, driven by a :class:`~.loop.Route`.
* :mod:`.images`: the image route (DEQ conv classifier); :mod:`.structures`: the 3D route
  (DEQuiformer / EquiformerV2 with ``task: classification``); :mod:`.routes`: which one a
  config or checkpoint takes.
* :mod:`.checkpoint`: what a ``classifier`` checkpoint holds (read and written through
  :mod:`dequiformer.rundir`); :mod:`.report`: metrics, confusion matrix, predictions, summary.
* :mod:`.train` (:func:`train_classifier`, :func:`bench_solvers`) and :mod:`.predict`
  (:func:`predict_split`): what ``dequiformer classify`` calls.

Names are imported lazily, so ``import dequiformer.classify`` stays cheap.
"""
from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "train_classifier": "train",
    "bench_solvers": "train",
    "predict_split": "predict",
    "resolve_image_config": "config",
    "resolve_structure_config": "config",
    "uses_structure_route": "config",
    "split_indices": "splits",
    "load_image_splits": "splits",
    "load_structure_splits": "splits",
    "read_labelled_structures": "splits",
    "ImageSplits": "splits",
    "StructureSplits": "splits",
    "train_image_classifier": "images",
    "load_image_classifier": "images",
    "predict_images": "images",
    "train_structure_classifier": "structures",
    "load_structure_classifier": "structures",
    "predict_structures": "structures",
    "save_confusion_matrix": "report",
    "write_predictions_csv": "report",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, {name: f".{module}" for name, module in _EXPORTS.items()})
