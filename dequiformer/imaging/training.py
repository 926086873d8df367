"""Train, evaluate, predict with and benchmark the implicit conv classifier on image data sets.

Config sections (``dequiformer.config.load_config``; unknown keys are errors naming them):

* ``model``: :data:`dequiformer.models.deq_conv.MODEL_DEFAULTS`; ``num_classes``,
  ``image_size`` and ``in_channels`` may be ``null`` (taken from the data).
* ``deq``: :data:`dequiformer.models.deq_conv.DEQ_DEFAULTS` (solver settings).
* ``data``: :data:`DATA_DEFAULTS`: an :class:`ImageDataset` ``.npz`` (random train/test
  split by ``test_fraction`` / ``split_seed``) or a CIFAR-10 ``cifar-10-batches-py``
  folder (its own train / test batches).
* ``train``: :data:`TRAIN_DEFAULTS`: Adam, cosine annealing per step, cross entropy.

A run directory holds ``metrics.csv`` (one row per epoch), ``last.pt`` / ``best.pt``
(weights, full config, optimizer, scheduler, epoch, RNG states, history; written
atomically), ``confusion_matrix.png`` / ``.csv`` on the test set and ``summary.json``.
Epoch ``e`` visits the training images in an order drawn from ``(train.seed, e)``, so a
resumed run sees the same batches as an uninterrupted one. Times are wall seconds of
the training steps (evaluation excluded) unless a name says otherwise.

A config whose ``model.name`` is ``dequiformer`` or ``equiformer_v2`` (``task:
classification``) trains on 3D structures instead: :func:`train_classifier` and
:func:`bench_solvers` hand it to :mod:`dequiformer.imaging.structure_training`, which
splits its frames with the same :func:`split_indices`, so a structure file in the order
of an image set gives both routes the same test molecules.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..models.deq_conv import DEQ_DEFAULTS, MODEL_DEFAULTS, DEQConvClassifier
from .image_dataset import ImageDataset

__all__ = [
    "DATA_DEFAULTS", "TRAIN_DEFAULTS", "ImageSplits", "resolve_config", "load_image_splits",
    "train_classifier", "load_classifier", "predict_images", "predict_to_csv", "bench_solvers",
    "save_confusion_matrix", "split_indices", "write_predictions_csv",
]

CHECKPOINT_FORMAT = "dequiformer-deq-conv-classifier/1"
DATA_DEFAULTS: dict[str, Any] = {
    "path": None,            # ImageDataset .npz or cifar-10-batches-py folder
    "format": "auto",        # auto | npz | cifar10
    "test_fraction": 0.2,    # npz only
    "split_seed": 0,         # npz only
    "limit": None,           # use at most this many training images
    "test_limit": None,      # and this many test images
    "augment": False,        # random 4-pixel-padded crops + horizontal flips (natural images only)
}
TRAIN_DEFAULTS: dict[str, Any] = {
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
_OPTIONAL_FROM_DATA = ("num_classes", "image_size", "in_channels")


# --------------------------------------------------------------------------- config
def _fill(section: str, given: dict | None, defaults: dict) -> dict:
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {section} config key(s) {unknown}; valid keys: {sorted(defaults)}")
    return {**copy.deepcopy(defaults), **given}


def resolve_config(cfg: dict) -> dict:
    """Fill defaults of all four sections and check values; errors name ``section.key``."""
    model = _fill("model", cfg.get("model"), MODEL_DEFAULTS)
    for key in _OPTIONAL_FROM_DATA:
        if key not in (cfg.get("model") or {}):
            model[key] = None
    out = {"model": model, "deq": _fill("deq", cfg.get("deq"), DEQ_DEFAULTS),
           "data": _fill("data", cfg.get("data"), DATA_DEFAULTS),
           "train": _fill("train", cfg.get("train"), TRAIN_DEFAULTS)}
    t, d = out["train"], out["data"]
    for section, keys in (("train", ("lr", "min_lr", "weight_decay", "target_accuracy")),
                          ("deq", ("tol", "lam", "beta", "damping", "b_tol")), ("data", ("test_fraction",))):
        for key in keys:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = out[section][key]
            if isinstance(value, str):
                try:
                    out[section][key] = float(value)
                except ValueError:
                    raise ValueError(f"{section}.{key} must be a number, got {value!r}") from None
    for key in ("epochs", "batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if not 0.0 <= float(d["test_fraction"]) < 1.0:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {d['test_fraction']!r}")
    if d["format"] not in ("auto", "npz", "cifar10"):
        raise ValueError(f"data.format must be auto, npz or cifar10, got {d['format']!r}")
    if not 0.0 < float(t["target_accuracy"]) <= 1.0:
        raise ValueError(f"train.target_accuracy must be in (0, 1], got {t['target_accuracy']!r}")
    return out


# --------------------------------------------------------------------------- data
def split_indices(n: int, test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` row indices of a random split of ``n`` samples.

    ``round(test_fraction * n)`` test rows (at least one and at most ``n - 1`` when
    ``test_fraction > 0`` and ``n > 1``) drawn by ``numpy.random.default_rng(split_seed)``.
    Shared by the image and the structure routes: the same order gives the same split.
    """
    order = np.random.default_rng(int(split_seed)).permutation(n)
    n_test = int(round(float(test_fraction) * n))
    if float(test_fraction) > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@dataclass
class ImageSplits:
    """uint8 images ``[n, C, H, W]`` + int64 labels ``[n]`` + ids of both splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_ids: list[str]
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_ids: list[str]
    class_names: list[str]
    source: str

    @property
    def image_size(self) -> list[int]:
        return [int(self.train_x.shape[2]), int(self.train_x.shape[3])]


def _to_chw(ds: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(ds.images.transpose(0, 3, 1, 2))), torch.from_numpy(ds.labels.copy())


def load_image_splits(data_cfg: dict) -> ImageSplits:
    """Train / test splits from the ``data`` section (see :data:`DATA_DEFAULTS`)."""
    data_cfg = _fill("data", data_cfg, DATA_DEFAULTS)
    if not data_cfg["path"]:
        raise ValueError("data.path is not set: give an ImageDataset .npz file or a cifar-10-batches-py folder "
                         "(e.g. --set data.path=data/dipole_images/images.npz)")
    path = Path(data_cfg["path"]).expanduser()
    fmt = data_cfg["format"]
    if not path.exists():
        expected = "a cifar-10-batches-py folder" if fmt == "cifar10" else "an ImageDataset .npz file"
        raise FileNotFoundError(f"data.path: {path} does not exist (expected {expected})")
    if fmt == "auto":
        fmt = "cifar10" if path.is_dir() else "npz"
    if fmt == "cifar10":
        from .cifar import cifar10_dataset

        train, test = cifar10_dataset(path, train=True), cifar10_dataset(path, train=False)
    else:
        if path.is_dir():
            raise ValueError(f"data.path: {path} is a folder but data.format is 'npz'")
        full = ImageDataset.load(path)
        train_idx, test_idx = split_indices(len(full), float(data_cfg["test_fraction"]), int(data_cfg["split_seed"]))
        train, test = full.subset(train_idx), full.subset(test_idx)
    if data_cfg["limit"] is not None:
        train = train.subset(np.arange(min(int(data_cfg["limit"]), len(train))))
    if data_cfg["test_limit"] is not None:
        test = test.subset(np.arange(min(int(data_cfg["test_limit"]), len(test))))
    if len(train) == 0:
        raise ValueError(f"data.path: {path} gives no training images")
    (trx, tr_y), (tex, te_y) = _to_chw(train), _to_chw(test)
    return ImageSplits(trx, tr_y, list(train.ids), tex, te_y, list(test.ids), list(train.class_names), f"{fmt}:{path}")


def _complete_model_cfg(model_cfg: dict, splits: ImageSplits) -> dict:
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
             ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(indices, float images [b, C, H, W] in [0, 1], labels [b])``."""
    index = torch.arange(len(y)) if order is None else order
    for start in range(0, len(index), batch_size):
        idx = index[start:start + batch_size]
        yield idx, x[idx].float().div_(255.0), y[idx]


def _augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random ``pad``-padded crops and horizontal flips, per image: ``[b, C, H, W]``."""
    b, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    out = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(offsets.tolist())])
    out[flips] = out[flips].flip(-1)
    return out


# --------------------------------------------------------------------------- checkpoints
def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_classifier(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[DEQConvClassifier, dict]:
    """Rebuild the model of a checkpoint written by :func:`train_classifier`: ``(model in eval mode, checkpoint)``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a deq_conv classifier checkpoint (format {CHECKPOINT_FORMAT!r})")
    cfg = ckpt["config"]
    model = DEQConvClassifier.from_config(cfg["model"], cfg["deq"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


# --------------------------------------------------------------------------- evaluation
def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def predict_images(model: DEQConvClassifier, x: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> dict[str, torch.Tensor | float]:
    """Class probabilities of uint8 images ``x [n, C, H, W]``.

    Returns ``{"probs": [n, classes], "steps": [n] f evaluations per image,
    "residual": [n], "mean_f_evals": batch f evaluations per batch}``.
    """
    model.eval()
    probs, steps, residual, nfe = [], [], [], []
    for _, images, _ in _batches(x, torch.zeros(len(x), dtype=torch.long), batch_size):
        logits = model(images.to(device, _dtype(model)))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        stats = model.last_stats
        steps.append(stats.steps.cpu())
        residual.append(stats.residual.cpu())
        nfe.append(stats.nfe)
    if not probs:
        n_classes = model.num_classes
        return {"probs": torch.zeros(0, n_classes), "steps": torch.zeros(0, dtype=torch.long),
                "residual": torch.zeros(0), "mean_f_evals": float("nan")}
    return {"probs": torch.cat(probs), "steps": torch.cat(steps), "residual": torch.cat(residual),
            "mean_f_evals": float(np.mean(nfe))}


def _evaluate(model: DEQConvClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int,
              device: torch.device) -> dict[str, Any]:
    if len(y) == 0:
        return {"loss": float("nan"), "acc": float("nan"), "mean_f_evals": float("nan"), "pred": torch.zeros(0)}
    out = predict_images(model, x, batch_size, device)
    probs = out["probs"].clamp_min(1e-12)
    return {"loss": float(F.nll_loss(probs.log(), y).item()), "acc": float((probs.argmax(1) == y).float().mean()),
            "mean_f_evals": out["mean_f_evals"], "pred": probs.argmax(1)}


def save_confusion_matrix(labels: torch.Tensor | np.ndarray, pred: torch.Tensor | np.ndarray,
                          class_names: Sequence[str], path: str | Path, title: str = "") -> np.ndarray:
    """Plot the ``[true, predicted]`` count matrix to ``path`` (PNG) and a ``.csv`` beside it; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    path = Path(path)
    size = 2.5 + 0.6 * k
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > 0.6 * max(cm.max(), 1) else "black", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    csv_tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.csv")
    with open(csv_tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["true\\predicted", *class_names])
        for name, row in zip(class_names, cm):
            writer.writerow([name, *row.tolist()])
    os.replace(csv_tmp, path.with_suffix(".csv"))
    return cm


# --------------------------------------------------------------------------- training
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "mean_f_evals",
                  "mean_b_evals", "mean_steps", "converged_fraction", "test_mean_f_evals", "train_seconds",
                  "eval_seconds", "elapsed_train_seconds")


def _write_metrics(history: list[dict], path: Path, columns: Sequence[str] = METRIC_COLUMNS) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    os.replace(tmp, path)


def _train_epoch(model: DEQConvClassifier, optimizer: torch.optim.Optimizer, scheduler: Any,
                 splits: ImageSplits, cfg: dict, epoch: int, device: torch.device) -> dict[str, float]:
    t, augment = cfg["train"], bool(cfg["data"]["augment"])
    generator = torch.Generator().manual_seed(int(t["seed"]) * 1_000_003 + epoch)
    order = torch.randperm(len(splits.train_y), generator=generator)
    steps = math.ceil(len(order) / t["batch_size"])
    if t["max_steps_per_epoch"]:
        steps = min(steps, int(t["max_steps_per_epoch"]))
    from tqdm.auto import tqdm

    model.train()
    loss_sum = correct = seen = 0.0
    f_evals, b_evals, image_steps, converged, seconds = [], [], [], [], 0.0
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{t['epochs']} [{model.deq['solver']}]", unit="batch",
               disable=not t["progress"], leave=False)
    for step, (_, images, labels) in enumerate(_batches(splits.train_x, splits.train_y, t["batch_size"], order)):
        if step >= steps:
            break
        if augment:
            images = _augment(images, generator)
        start = time.perf_counter()
        images, labels = images.to(device, _dtype(model)), labels.to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step + 1}; "
                                     f"try a lower train.lr (now {t['lr']})")
        loss.backward()
        optimizer.step()
        scheduler.step()
        seconds += time.perf_counter() - start
        stats = model.last_stats
        f_evals.append(stats.nfe)
        b_evals.append(stats.backward.get("nfe", 0))
        image_steps.append(stats.steps.float().mean().item())
        converged.append(stats.converged.float().mean().item())
        n = len(labels)
        loss_sum += float(loss.detach()) * n
        correct += float((logits.detach().argmax(1) == labels).sum())
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", f_evals=stats.nfe)
        bar.update(1)
    bar.close()
    return {"train_loss": loss_sum / seen, "train_acc": correct / seen, "mean_f_evals": float(np.mean(f_evals)),
            "mean_b_evals": float(np.mean(b_evals)), "mean_steps": float(np.mean(image_steps)),
            "converged_fraction": float(np.mean(converged)), "train_seconds": seconds}



def _optimizer_and_resume(model: torch.nn.Module, cfg: dict, n_train: int, resume: str | Path | None,
                          device: torch.device, checkpoint_format: str, kind: str,
                          log: Callable[[str], None]) -> tuple[Any, Any, list[dict], float, int]:
    """Adam + per-step cosine schedule for ``cfg["train"]``; with ``resume`` the state of a
    checkpoint of ``checkpoint_format`` (refused when its model/data settings differ).

    Returns ``(optimizer, scheduler, history, best_test_acc, start_epoch)``.
    """
    t = cfg["train"]
    optimizer = torch.optim.Adam(model.parameters(), lr=float(t["lr"]), weight_decay=float(t["weight_decay"]))
    steps = math.ceil(n_train / t["batch_size"])
    if t["max_steps_per_epoch"]:
        steps = min(steps, int(t["max_steps_per_epoch"]))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t["epochs"] * steps,
                                                           eta_min=float(t["min_lr"]))
    if resume is None:
        return optimizer, scheduler, [], -1.0, 1
    ckpt = torch.load(resume, map_location=device, weights_only=False) if Path(resume).is_file() else None
    if ckpt is None or ckpt.get("format") != checkpoint_format:
        raise FileNotFoundError(f"--resume: {resume} is not a {kind} checkpoint written by this trainer")
    for section in ("model", "data"):
        if ckpt["config"][section] != cfg[section]:
            diff = sorted(k for k in set(cfg[section]) | set(ckpt["config"][section])
                          if cfg[section].get(k) != ckpt["config"][section].get(k))
            raise ValueError(f"--resume: {resume} was trained with different {section} settings ({diff})")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scheduler.T_max != t["epochs"] * steps:  # train.epochs changed: stretch the remaining cosine
        log(f"note: train.epochs is now {t['epochs']} (cosine schedule length {scheduler.T_max} -> "
            f"{t['epochs'] * steps} steps)")
        scheduler.T_max = t["epochs"] * steps
    _set_rng_state(ckpt["rng"])
    log(f"resumed from {resume} after epoch {ckpt['epoch']}")
    return optimizer, scheduler, list(ckpt["history"]), float(ckpt["best_test_acc"]), int(ckpt["epoch"]) + 1


def train_classifier(cfg: dict, run_dir: str | Path, *, resume: str | Path | None = None,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train :class:`DEQConvClassifier` as configured; write the run directory; return a summary.

    ``resume``: a checkpoint (normally ``<run_dir>/last.pt``) to continue from; its
    ``model`` and ``data`` sections must equal ``cfg``'s. Summary keys: ``run_dir``,
    ``solver``, ``epochs``, ``train_acc``, ``test_acc``, ``best_test_acc``, ``seconds``
    (training steps), ``seconds_to_target`` (training seconds until the first epoch whose
    train accuracy reached ``train.target_accuracy``; ``None`` if never), ``mean_f_evals``
    (batch f evaluations per training batch, forward solve incl. the tracked ``f(z*)``),
    ``mean_b_evals`` (adjoint vector-Jacobian products per batch), ``mean_steps`` (f evaluations
    until each image converged, averaged over images), ``converged_fraction`` (images whose
    forward solve reached ``deq.tol``), ``history``.

    A ``model.name`` of ``dequiformer`` / ``equiformer_v2`` trains on 3D structures instead
    (:func:`dequiformer.imaging.structure_training.train_structure_classifier`).
    """
    from .structure_training import train_structure_classifier, uses_structure_route

    if uses_structure_route(cfg):
        return train_structure_classifier(cfg, run_dir, resume=resume, log=log)
    cfg = resolve_config(cfg)
    t = cfg["train"]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if t["num_threads"]:
        torch.set_num_threads(int(t["num_threads"]))
    device = _device(str(t["device"]))
    splits = load_image_splits(cfg["data"])
    cfg["model"] = _complete_model_cfg(cfg["model"], splits)
    torch.manual_seed(int(t["seed"]))
    model = DEQConvClassifier.from_config(cfg["model"], cfg["deq"]).to(device)
    optimizer, scheduler, history, best, start_epoch = _optimizer_and_resume(
        model, cfg, len(splits.train_y), resume, device, CHECKPOINT_FORMAT, "classifier", log)
    log(f"deq_conv: {model.num_parameters():,} parameters, solver {model.deq['solver']}, "
        f"{len(splits.train_y)} train / {len(splits.test_y)} test images, {len(splits.class_names)} classes, {device}")
    return _fit_epochs(model, optimizer, scheduler, splits, cfg, device, run_dir, history, best, start_epoch,
                       train_epoch=_train_epoch, evaluate=_evaluate, test_inputs=splits.test_x,
                       checkpoint_format=CHECKPOINT_FORMAT, solver=model.deq["solver"],
                       parameters=model.num_parameters(), log=log)


def _fit_epochs(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, splits: Any, cfg: dict,
                device: torch.device, run_dir: Path, history: list[dict], best: float, start_epoch: int, *,
                train_epoch: Callable[..., dict], evaluate: Callable[..., dict], test_inputs: Any,
                checkpoint_format: str, solver: str, parameters: int, log: Callable[[str], None],
                metric_columns: Sequence[str] = METRIC_COLUMNS, test_extras: Sequence[str] = (),
                log_extra: Callable[[dict], str] = lambda row: "", matrix_label: str | None = None,
                summary_head: dict[str, Any] | None = None) -> dict[str, Any]:
    """The epoch loop shared by the image and structure routes: per epoch train, evaluate on
    ``(test_inputs, splits.test_y)``, append to ``metrics.csv``, save ``last.pt`` / ``best.pt``
    and log; then the confusion matrix and ``summary.json``. Returns the summary.

    ``test_extras``: keys of ``evaluate``'s result also stored as ``test_<key>`` row fields;
    ``log_extra(row)``: text appended after the backward f evaluations in the epoch line;
    ``matrix_label``: the confusion-matrix title's label (default ``solver``);
    ``summary_head``: summary fields placed between ``run_dir`` and ``solver``.
    """
    t = cfg["train"]
    eval_bs = int(t["eval_batch_size"] or t["batch_size"])
    for epoch in range(start_epoch, t["epochs"] + 1):
        row: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_epoch(model, optimizer, scheduler, splits, cfg, epoch, device))
        start = time.perf_counter()
        test = evaluate(model, test_inputs, splits.test_y, eval_bs, device)
        row.update(test_loss=test["loss"], test_acc=test["acc"], test_mean_f_evals=test["mean_f_evals"],
                   **{f"test_{k}": test[k] for k in test_extras}, eval_seconds=time.perf_counter() - start)
        row["elapsed_train_seconds"] = (history[-1]["elapsed_train_seconds"] if history else 0.0) + row["train_seconds"]
        history.append(row)
        _write_metrics(history, run_dir / "metrics.csv", metric_columns)
        score = row["train_acc"] if math.isnan(row["test_acc"]) else row["test_acc"]
        improved = score > best
        best = max(best, score)
        ckpt = {"format": checkpoint_format, "config": cfg, "class_names": splits.class_names,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "rng": _rng_state(),
                "history": history, "best_test_acc": best}
        _atomic_torch_save(ckpt, run_dir / "last.pt")
        if improved:
            _atomic_torch_save(ckpt, run_dir / "best.pt")
        log(f"epoch {epoch}/{t['epochs']}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
            f"test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} | f evals/batch {row['mean_f_evals']:.1f} "
            f"(backward {row['mean_b_evals']:.1f}){log_extra(row)} | {row['train_seconds']:.1f} s")
    if not history:
        raise ValueError(f"nothing to train: train.epochs={t['epochs']} and the checkpoint ends there")
    if len(splits.test_y):
        final = evaluate(model, test_inputs, splits.test_y, eval_bs, device)
        save_confusion_matrix(splits.test_y, final["pred"], splits.class_names, run_dir / "confusion_matrix.png",
                              f"test accuracy {final['acc']:.3f} ({matrix_label or solver}, "
                              f"epoch {history[-1]['epoch']})")
    target = float(t["target_accuracy"])
    reached = [r for r in history if r["train_acc"] >= target]
    summary = {
        "run_dir": str(run_dir), **(summary_head or {}), "solver": solver, "epochs": history[-1]["epoch"],
        "train_acc": history[-1]["train_acc"], "test_acc": _nan_to_none(history[-1]["test_acc"]),
        "best_test_acc": _nan_to_none(best), "seconds": history[-1]["elapsed_train_seconds"],
        "target_accuracy": target,
        "seconds_to_target": reached[0]["elapsed_train_seconds"] if reached else None,
        "mean_f_evals": float(np.mean([r["mean_f_evals"] for r in history])),
        "mean_b_evals": float(np.mean([r["mean_b_evals"] for r in history])),
        "mean_steps": float(np.mean([r["mean_steps"] for r in history])),
        "converged_fraction": float(np.mean([r["converged_fraction"] for r in history])),
        "parameters": parameters, "history": [{k: _nan_to_none(v) for k, v in r.items()} for r in history],
    }
    from ..rundir import write_json

    write_json(run_dir / "summary.json", summary)
    return summary


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


# --------------------------------------------------------------------------- predict / bench
def predict_to_csv(model: DEQConvClassifier, class_names: Sequence[str], x: torch.Tensor, y: torch.Tensor | None,
                   ids: Sequence[str], path: str | Path, batch_size: int = 256,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Write one row per image (id, label, prediction, class probabilities, solver steps, residual).

    Returns ``{"n", "accuracy" (None without labels), "output", "mean_f_evals"}``.
    """
    return write_predictions_csv(predict_images(model, x, batch_size, device), class_names, y, ids, path)


def write_predictions_csv(out: dict[str, Any], class_names: Sequence[str], y: torch.Tensor | None,
                          ids: Sequence[str], path: str | Path) -> dict[str, Any]:
    """Write predictions ``out`` (``probs`` [n, classes], ``steps`` [n], ``residual`` [n],
    ``mean_f_evals``) as CSV (atomically); returns ``{"n", "accuracy", "output", "mean_f_evals"}``."""
    pred = out["probs"].argmax(1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "id", "label", "label_name", "pred", "pred_name",
                         *[f"prob_{c}" for c in class_names], "solver_steps", "residual"])
        for i in range(len(pred)):
            label = int(y[i]) if y is not None else ""
            writer.writerow([i, ids[i], label, class_names[label] if y is not None else "", int(pred[i]),
                             class_names[int(pred[i])], *[f"{p:.6f}" for p in out["probs"][i].tolist()],
                             int(out["steps"][i]), f"{float(out['residual'][i]):.3e}"])
    os.replace(tmp, path)
    acc = float((pred == y).float().mean()) if y is not None and len(y) else None
    return {"n": int(len(pred)), "accuracy": acc, "output": str(path),
            "mean_f_evals": _nan_to_none(out["mean_f_evals"])}


def bench_solvers(cfg: dict, run_dir: str | Path, solvers: Sequence[str] = ("anderson", "forward"),
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the same model (same init and batch order) once per solver; ``{"rows": [...], ...}``.

    Each row: ``solver``, ``epochs``, ``train_acc``, ``test_acc``, ``seconds``,
    ``seconds_to_target`` (``None`` when ``train.target_accuracy`` was not reached),
    ``mean_f_evals`` (batch f evaluations per training batch), plus ``mean_b_evals``,
    ``mean_steps`` and ``converged_fraction`` (see :func:`train_classifier`).
    Each solver's run directory is ``<run_dir>/<solver>``. A structure-route config
    (``model.name: dequiformer``) is benchmarked the same way; the explicit ``equiformer_v2``
    has no solver and is an error.
    """
    from .structure_training import resolve_structure_config, uses_structure_route

    structure = uses_structure_route(cfg)
    if structure:
        resolved = resolve_structure_config(cfg)
        if resolved["model"].get("name") != "dequiformer":
            raise ValueError(f"classify bench compares DEQ solvers; model.name {resolved['model'].get('name')!r} "
                             "has no fixed-point solver (use model.name: dequiformer)")
    rows = []
    for solver in solvers:
        run_cfg = copy.deepcopy(cfg)
        run_cfg.setdefault("deq", {})["solver"] = solver
        log(f"--- bench: {solver}")
        s = train_classifier(run_cfg, Path(run_dir) / solver, log=log)
        rows.append({k: s[k] for k in ("solver", "epochs", "train_acc", "test_acc", "seconds",
                                       "seconds_to_target", "mean_f_evals", "mean_b_evals", "mean_steps",
                                       "converged_fraction")})
    if not structure:
        resolved = resolve_config(cfg)
    return {"rows": rows, "target_accuracy": float(resolved["train"]["target_accuracy"]),
            "data": str(resolved["data"]["path"]), "seed": resolved["train"]["seed"], "run_dir": str(run_dir)}
