"""The image route: the implicit conv classifier (:class:`~dequiformer.models.deq_conv.DEQConvClassifier`)
on graph images (or any RGB image set, e.g. CIFAR-10).

Config: :func:`dequiformer.classify.config.resolve_image_config`; data:
:func:`dequiformer.classify.splits.load_image_splits`. Images are stored as uint8
``[n, C, H, W]`` and fed to the model as floats in ``[0, 1]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..models.deq_conv import DEQConvClassifier
from .checkpoint import load_classifier_checkpoint
from ..device import resolve_device
from .config import resolve_image_config
from .loop import LogHook, Route, Step, fit
from .splits import ImageSplits, load_image_splits

__all__ = ["ImageRoute", "augment_images", "load_image_classifier", "predict_images", "train_image_classifier"]


def _complete_model_cfg(model_cfg: Mapping[str, Any], splits: ImageSplits) -> dict[str, Any]:
    """Fill ``null`` shape keys from the data; mismatches raise errors naming the key."""
    cfg = dict(model_cfg)
    from_data = {"num_classes": len(splits.class_names), "image_size": splits.image_size,
                 "in_channels": int(splits.train_x.shape[1])}
    for key, value in from_data.items():
        if cfg.get(key) is None:
            cfg[key] = value
            continue
        given = [cfg[key]] * 2 if key == "image_size" and isinstance(cfg[key], int) else cfg[key]
        if (list(given) if key == "image_size" else given) != value:
            raise ValueError(f"model.{key}={cfg[key]!r} does not match the data ({value!r} in {splits.source}); "
                             f"set model.{key}: null to take it from the data")
    return cfg


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, order: torch.Tensor | None = None
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(float images [b, C, H, W] in [0, 1], labels [b])`` in ``order`` (default: as stored)."""
    index = torch.arange(len(y)) if order is None else order
    for start in range(0, len(index), batch_size):
        idx = index[start:start + batch_size]
        yield x[idx].float().div_(255.0), y[idx]


def augment_images(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-pixel-padded crops and horizontal flips, drawn per image: ``[b, C, H, W]`` in and out."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offsets.tolist())])
    out[flips] = out[flips].flip(-1)
    return out


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def predict_images(model: DEQConvClassifier, x: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Class probabilities of uint8 images ``x [n, C, H, W]``.

    Returns ``{"probs": [n, classes], "steps": [n] f evaluations per image,
    "residual": [n], "mean_f_evals": batch f evaluations per batch}``.
    """
    model.eval()
    probs, steps, residual, nfe = [], [], [], []
    for images, _ in _batches(x, torch.zeros(len(x), dtype=torch.long), batch_size):
        logits = model(images.to(device, _dtype(model)))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        stats = model.last_stats
        steps.append(stats.steps.cpu())
        residual.append(stats.residual.cpu())
        nfe.append(stats.nfe)
    if not probs:
        return {"probs": torch.zeros(0, model.num_classes), "steps": torch.zeros(0, dtype=torch.long),
                "residual": torch.zeros(0), "mean_f_evals": float("nan")}
    return {"probs": torch.cat(probs), "steps": torch.cat(steps), "residual": torch.cat(residual),
            "mean_f_evals": float(np.mean(nfe))}


class ImageRoute(Route):
    """:class:`DEQConvClassifier` on :class:`~dequiformer.classify.splits.ImageSplits`."""

    kind = "image"
    noun = "images"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ImageRoute":
        """Resolve ``cfg``, load the data, fill the model's shape keys from it, build the model
        (seeded by ``train.seed``) on ``train.device``."""
        cfg = resolve_image_config(cfg)
        t = cfg["train"]
        if t["num_threads"]:
            torch.set_num_threads(int(t["num_threads"]))
        device = resolve_device(str(t["device"]), what="train.device")
        splits = load_image_splits(cfg["data"])
        cfg["model"] = _complete_model_cfg(cfg["model"], splits)
        torch.manual_seed(int(t["seed"]))
        model = DEQConvClassifier.from_config(cfg["model"], cfg["deq"]).to(device)
        return cls(cfg, model, splits, device)

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], data_cfg: Mapping[str, Any],
                        device: torch.device) -> "ImageRoute":
        """The checkpoint's model (eval mode) on the images of ``data_cfg``."""
        return cls(dict(state["config"]), _model_from_state(state, device), load_image_splits(data_cfg), device)

    @property
    def solver(self) -> str:
        return self.model.deq["solver"]

    @property
    def title(self) -> str:
        return "deq_conv"

    def train_batches(self, order: torch.Tensor, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, ...]]:
        augment = bool(self.cfg["data"]["augment"])
        for images, labels in _batches(self.splits.train_x, self.splits.train_y, self.cfg["train"]["batch_size"],
                                       order):
            yield (augment_images(images, generator) if augment else images), labels

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
        images, labels = batch[0].to(self.device, _dtype(self.model)), batch[1].to(self.device)
        logits = self.model(images)
        loss = ce = F.cross_entropy(logits, labels)
        terms = {"train_loss": ce}
        if self.model.radius_loss is not None:  # deq.radius_reg > 0: keep the layer contractive
            loss = loss + self.model.radius_loss
            terms["radius_loss"] = self.model.radius_loss
        stats = self.model.last_stats
        return Step(loss=loss, terms=terms, logits=logits, labels=labels, f_evals=stats.nfe,
                    steps=stats.steps, converged=float(stats.converged.float().mean()), stats=stats)

    def predict(self, inputs: torch.Tensor, batch_size: int) -> dict[str, Any]:
        return predict_images(self.model, inputs, batch_size, self.device)


def _model_from_state(state: Mapping[str, Any], device: torch.device | str) -> DEQConvClassifier:
    cfg = state["config"]
    model = DEQConvClassifier.from_config(cfg["model"], cfg["deq"]).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def load_image_classifier(checkpoint: str | Path, device: str | torch.device = "cpu"
                          ) -> tuple[DEQConvClassifier, dict[str, Any]]:
    """Rebuild the model of an image-classifier checkpoint: ``(model in eval mode, checkpoint)``."""
    state = load_classifier_checkpoint(checkpoint, map_location=device, route=ImageRoute.kind)
    return _model_from_state(state, device), state


def train_image_classifier(cfg: Mapping[str, Any], run_dir: str | Path, *, resume: str | Path | None = None,
                           log: LogHook | None = None) -> dict[str, Any]:
    """Train :class:`DEQConvClassifier` as configured; write the run directory; return the summary.

    ``resume``: a checkpoint (normally ``<run_dir>/last.pt``) to continue from; its ``model``
    and ``data`` sections must equal ``cfg``'s. Summary keys: ``run_dir``, ``solver``,
    ``epochs``, ``train_acc``, ``test_acc``, ``best_test_acc``, ``seconds`` (training steps),
    ``target_accuracy``, ``seconds_to_target``, ``mean_f_evals`` (batch f evaluations per
    training batch, forward solve incl. the tracked ``f(z*)``), ``mean_b_evals`` (adjoint
    vector-Jacobian products per batch), ``mean_steps`` (f evaluations until each image
    converged, averaged over images), ``converged_fraction`` (images whose forward solve
    reached ``deq.tol``), ``parameters``, ``history``. ``log``: also receives each progress line.
    """
    return fit(ImageRoute.from_config(cfg), run_dir, resume=resume, log=log)
