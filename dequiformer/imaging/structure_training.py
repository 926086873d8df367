"""Graph-level classification of 3D structures with DEQuiformer (or explicit EquiformerV2).

The structure route of ``dequiformer classify``: the same labels as the graph-image
route, learned from the atoms themselves. A config is routed here when ``model.name``
is ``dequiformer`` or ``equiformer_v2``; ``model.task`` must be ``classification``.

Config sections:

* ``model``: :data:`dequiformer.models.hparams.DEFAULTS`; ``num_classes`` and
  ``avg_degree`` may be ``null`` (then taken from the data / the training graphs).
* ``deq``: :data:`dequiformer.models.dequiformer.DEQ_DEFAULTS` (ignored by ``equiformer_v2``).
* ``data``: :data:`DATA_DEFAULTS`: an extended XYZ (or any ASE-readable) file whose
  frames carry an integer class in ``info[label_key]``. Train / test split by
  ``test_fraction`` / ``split_seed`` exactly as the image route splits an ``.npz``
  (:func:`dequiformer.imaging.training.split_indices`), so a structure file written in the
  order of an image set (``datasets/generate_dipole_images.py`` writes both) gives both
  routes the same test molecules.
* ``train``: :data:`TRAIN_DEFAULTS`: Adam, cosine annealing per step, cross entropy on
  the logits plus, for DEQuiformer, fixed-point correction terms on the decoded
  intermediate states: with ``K`` states (earliest first) term ``k`` has weight
  ``deq.fp_correction.weight ** (K - k)``, as in the force-field trainer.

Graphs are built once per structure with the model's ``cutoff`` / ``max_neighbors``. The
run directory holds ``metrics.csv``, ``last.pt`` / ``best.pt`` (weights, full config,
optimizer, scheduler, epoch, RNG states, history; written atomically),
``confusion_matrix.png`` / ``.csv`` on the test set and ``summary.json`` — the same
files, columns and summary keys as the image route (plus ``test_mean_steps``).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.graph import AtomicGraph
from ..models import build_model
from ..models.hparams import DEFAULTS as MODEL_DEFAULTS
from ..models.dequiformer import resolve_deq
from .training import (
    METRIC_COLUMNS, _device, _fill, _fit_epochs, _nan_to_none, _optimizer_and_resume, split_indices,
    write_predictions_csv,
)

__all__ = [
    "STRUCTURE_MODELS", "CHECKPOINT_FORMAT", "DATA_DEFAULTS", "TRAIN_DEFAULTS", "StructureSplits",
    "uses_structure_route", "resolve_structure_config", "read_labelled_structures", "load_structure_splits",
    "train_structure_classifier", "load_structure_classifier", "predict_structures", "predict_structure_split",
    "is_structure_checkpoint",
]

STRUCTURE_MODELS = ("dequiformer", "equiformer_v2")
CHECKPOINT_FORMAT = "dequiformer-structure-classifier/1"
DATA_DEFAULTS: dict[str, Any] = {
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
TRAIN_DEFAULTS: dict[str, Any] = {
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
STRUCTURE_METRIC_COLUMNS = (*METRIC_COLUMNS[:11], "test_mean_steps", *METRIC_COLUMNS[11:], "correction_loss")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- config
def uses_structure_route(cfg: dict) -> bool:
    """True when ``cfg["model"]["name"]`` is a 3D-structure model (``dequiformer``, ``equiformer_v2``)."""
    return (cfg.get("model") or {}).get("name") in STRUCTURE_MODELS


def resolve_structure_config(cfg: dict) -> dict:
    """Fill defaults of the four sections and check values; errors name ``section.key``."""
    model = dict(cfg.get("model") or {})
    if model.get("name") not in STRUCTURE_MODELS:
        raise ValueError(f"model.name must be one of {STRUCTURE_MODELS} for structure classification, "
                         f"got {model.get('name')!r}")
    if model.get("task") != "classification":
        raise ValueError(f"model.task must be 'classification' to classify structures with {model['name']} "
                         f"(got {model.get('task', MODEL_DEFAULTS['task'])!r}); "
                         "add task: classification to the model section")
    unknown = sorted(set(model) - set(MODEL_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(MODEL_DEFAULTS)}")
    model.setdefault("num_classes", None)
    model.setdefault("avg_degree", None)
    out = {"model": model, "deq": resolve_deq(cfg.get("deq")),
           "data": _fill("data", cfg.get("data"), DATA_DEFAULTS),
           "train": _fill("train", cfg.get("train"), TRAIN_DEFAULTS)}
    for section, keys in (("train", ("lr", "min_lr", "weight_decay", "target_accuracy", "grad_clip")),
                          ("data", ("test_fraction",)), ("deq", ("tol", "reuse_tol", "b_tol"))):
        for key in keys:  # YAML 1.1 reads 1e-3 (no dot) as a string
            value = out[section][key]
            if isinstance(value, str):
                try:
                    out[section][key] = float(value)
                except ValueError:
                    raise ValueError(f"{section}.{key} must be a number, got {value!r}") from None
    t, d = out["train"], out["data"]
    for key in ("epochs", "batch_size"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if t["dtype"] not in _DTYPES:
        raise ValueError(f"train.dtype must be one of {sorted(_DTYPES)}, got {t['dtype']!r}")
    if not 0.0 <= float(d["test_fraction"]) < 1.0:
        raise ValueError(f"data.test_fraction must be in [0, 1), got {d['test_fraction']!r}")
    if not 0.0 < float(t["target_accuracy"]) <= 1.0:
        raise ValueError(f"train.target_accuracy must be in (0, 1], got {t['target_accuracy']!r}")
    if d["class_names"] is not None and (not isinstance(d["class_names"], list) or len(d["class_names"]) < 2):
        raise ValueError(f"data.class_names must be a list of at least two names, got {d['class_names']!r}")
    return out


# --------------------------------------------------------------------------- data
def read_labelled_structures(path: str | Path, label_key: str = "label", id_key: str = "id",
                             label_name_key: str = "label_name", fmt: str | None = None
                             ) -> tuple[list[Any], np.ndarray, list[str], dict[int, str]]:
    """Read every frame of ``path`` with ASE: ``(atoms list, int64 labels [n], ids, {label: name})``.

    The label of frame ``i`` is ``atoms.info[label_key]`` (a non-negative integer); a
    missing or invalid one is a ``ValueError`` naming the file, the frame and its id.
    Ids come from ``info[id_key]`` (default: the frame index); class names from
    ``info[label_name_key]`` where present.
    """
    import ase.io

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} does not exist (expected an extended XYZ file of labelled "
                                f"structures, e.g. data/dipole_images/structures.extxyz)")
    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:
        raise ValueError(f"data.path: cannot read {path} with ASE ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"data.path: {path} holds no structures")
    labels, ids, names = [], [], {}
    for i, atoms in enumerate(frames):
        sid = str(atoms.info.get(id_key, i))
        where = f"{path}: frame {i}" + (f" (id {sid})" if id_key in atoms.info else "")
        if label_key not in atoms.info:
            raise ValueError(f"{where} has no class label: info[{label_key!r}] is missing "
                             f"(info keys: {sorted(atoms.info)}); set data.label_key to the key that holds it")
        value = atoms.info[label_key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 0:
            raise ValueError(f"{where}: info[{label_key!r}] = {value!r} is not a non-negative integer class")
        labels.append(int(value))
        ids.append(sid)
        if label_name_key in atoms.info:
            names.setdefault(int(value), str(atoms.info[label_name_key]))
    return frames, np.asarray(labels, dtype=np.int64), ids, names


@dataclass
class StructureSplits:
    """Per-structure graphs (built once) + int64 labels + ids of both splits."""

    train_graphs: list[AtomicGraph]
    train_y: torch.Tensor
    train_ids: list[str]
    test_graphs: list[AtomicGraph]
    test_y: torch.Tensor
    test_ids: list[str]
    class_names: list[str]
    source: str


def load_structure_splits(data_cfg: dict, cutoff: float, max_neighbors: int | None,
                          dtype: torch.dtype = torch.float32) -> StructureSplits:
    """Train / test splits of the ``data`` section (see :data:`DATA_DEFAULTS`); one graph per structure."""
    d = _fill("data", data_cfg, DATA_DEFAULTS)
    if not d["path"]:
        raise ValueError("data.path is not set: give an extended XYZ file of labelled structures "
                         "(e.g. --set data.path=data/dipole_images/structures.extxyz)")
    path = Path(d["path"]).expanduser()
    frames, labels, ids, names = read_labelled_structures(path, d["label_key"], d["id_key"], d["label_name_key"],
                                                          d["format"])
    if d["class_names"] is not None:
        class_names = [str(c) for c in d["class_names"]]
    else:
        k = max(int(labels.max()) + 1, 2, *(c + 1 for c in names))
        class_names = [names.get(c, f"class_{c}") for c in range(k)]
    bad = np.flatnonzero(labels >= len(class_names))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}: frame {i} (id {ids[i]}) has label {labels[i]}, but data.class_names lists "
                         f"{len(class_names)} classes")
    train_idx, test_idx = split_indices(len(frames), float(d["test_fraction"]), int(d["split_seed"]))
    if d["limit"] is not None:
        train_idx = train_idx[: int(d["limit"])]
    if d["test_limit"] is not None:
        test_idx = test_idx[: int(d["test_limit"])]
    if len(train_idx) == 0:
        raise ValueError(f"data.path: {path} gives no training structures")

    def graphs(rows: np.ndarray) -> list[AtomicGraph]:
        out = []
        for i in rows.tolist():
            try:
                g = AtomicGraph.from_atoms(frames[i], cutoff=cutoff, max_neighbors=max_neighbors, dtype=dtype)
            except ValueError as exc:
                raise ValueError(f"{path}: frame {i} (id {ids[i]}): {exc}") from None
            g.labels = torch.tensor([int(labels[i])], dtype=torch.long)
            out.append(g)
        return out

    return StructureSplits(graphs(train_idx), torch.from_numpy(labels[train_idx]), [ids[i] for i in train_idx],
                           graphs(test_idx), torch.from_numpy(labels[test_idx]), [ids[i] for i in test_idx],
                           class_names, f"structures:{path}")


def _complete_model_cfg(model_cfg: dict, splits: StructureSplits) -> dict:
    """Fill ``num_classes`` / ``avg_degree`` from the data; check ``num_classes`` and elements."""
    cfg = dict(model_cfg)
    k = len(splits.class_names)
    if cfg.get("num_classes") is None:
        cfg["num_classes"] = k
    elif int(cfg["num_classes"]) != k:
        raise ValueError(f"model.num_classes={cfg['num_classes']} does not match the data ({k} classes "
                         f"{splits.class_names} in {splits.source}); "
                         "set model.num_classes: null to take it from the data")
    if cfg.get("avg_degree") is None:  # edge-degree embedding normalisation: mean neighbours per atom
        edges = sum(g.num_edges for g in splits.train_graphs)
        atoms = sum(g.num_atoms for g in splits.train_graphs)
        cfg["avg_degree"] = round(float(edges) / max(atoms, 1), 6) or 1.0
    limit = int(cfg.get("max_num_elements", MODEL_DEFAULTS["max_num_elements"]))
    for graphs, ids in ((splits.train_graphs, splits.train_ids), (splits.test_graphs, splits.test_ids)):
        for g, sid in zip(graphs, ids):
            z = int(g.atomic_numbers.max())
            if z >= limit:
                raise ValueError(f"structure {sid} in {splits.source} has atomic number {z}; raise "
                                 f"model.max_num_elements (now {limit}) above it")
    return cfg


def _batches(graphs: Sequence[AtomicGraph], batch_size: int, order: Iterable[int] | None = None
             ) -> Iterator[AtomicGraph]:
    index = list(range(len(graphs))) if order is None else [int(i) for i in order]
    for start in range(0, len(index), batch_size):
        yield AtomicGraph.collate([graphs[i] for i in index[start:start + batch_size]])


def _solver_numbers(model: torch.nn.Module, out: dict, num_graphs: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(steps [B], residual [B], f evaluations)``; the explicit model counts its blocks."""
    stats = out.get("solver")
    if stats is None:
        n_blocks = int(model.hparams["num_layers"])
        return torch.full((num_graphs,), n_blocks), torch.zeros(num_graphs), n_blocks
    return stats.steps.detach().cpu(), stats.residual.detach().cpu().float(), int(stats.nfe)


# --------------------------------------------------------------------------- model / checkpoints
def _solver_name(model: torch.nn.Module) -> str:
    return model.deq_cfg["solver"] if hasattr(model, "deq_cfg") else "explicit"


def _num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(cfg: dict, device: torch.device) -> torch.nn.Module:
    deq = cfg["deq"] if cfg["model"]["name"] == "dequiformer" else None
    return build_model(cfg["model"], deq).to(device=device, dtype=_DTYPES[cfg["train"]["dtype"]])


def is_structure_checkpoint(path: str | Path) -> bool:
    """True when ``path`` is a checkpoint written by :func:`train_structure_classifier`."""
    path = Path(path)
    if not path.is_file():
        return False
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def load_structure_classifier(checkpoint: str | Path, device: str | torch.device = "cpu"
                              ) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a structure-classifier checkpoint: ``(model in eval mode, checkpoint)``."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location=device, weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a structure classifier checkpoint (format {CHECKPOINT_FORMAT!r})")
    model = _build(ckpt["config"], torch.device(device))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_structures(model: torch.nn.Module, graphs: Sequence[AtomicGraph], batch_size: int = 64,
                       device: torch.device | str = "cpu") -> dict[str, Any]:
    """Class probabilities of per-structure graphs (built with ``model.cutoff`` / ``model.max_neighbors``).

    Returns ``{"probs": [n, classes], "steps": [n] f evaluations per structure,
    "residual": [n], "mean_f_evals": batch f evaluations per batch, "mean_steps"}``.
    """
    model.eval()
    dtype = next(model.parameters()).dtype
    probs, steps, residual, nfe = [], [], [], []
    for batch in _batches(graphs, batch_size):
        out = model(batch.to(device, dtype))
        probs.append(torch.softmax(out["logits"].float(), dim=1).cpu())
        s, r, n = _solver_numbers(model, out, batch.num_graphs)
        steps.append(s)
        residual.append(r)
        nfe.append(n)
    if not probs:
        return {"probs": torch.zeros(0, int(model.hparams["num_classes"])), "steps": torch.zeros(0, dtype=torch.long),
                "residual": torch.zeros(0), "mean_f_evals": float("nan"), "mean_steps": float("nan")}
    steps_all = torch.cat(steps)
    return {"probs": torch.cat(probs), "steps": steps_all, "residual": torch.cat(residual),
            "mean_f_evals": float(np.mean(nfe)), "mean_steps": float(steps_all.float().mean())}


def _evaluate(model: torch.nn.Module, graphs: Sequence[AtomicGraph], y: torch.Tensor, batch_size: int,
              device: torch.device) -> dict[str, Any]:
    if len(y) == 0:
        nan = float("nan")
        return {"loss": nan, "acc": nan, "mean_f_evals": nan, "mean_steps": nan, "pred": torch.zeros(0)}
    out = predict_structures(model, graphs, batch_size, device)
    probs = out["probs"].clamp_min(1e-12)
    return {"loss": float(F.nll_loss(probs.log(), y)), "acc": float((probs.argmax(1) == y).float().mean()),
            "mean_f_evals": out["mean_f_evals"], "mean_steps": out["mean_steps"], "pred": probs.argmax(1)}


# --------------------------------------------------------------------------- training
def _classification_loss(out: dict, labels: torch.Tensor, correction_weight: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, cross entropy of the output, correction part)``; correction term ``k`` of ``K``
    (earliest first) is weighted ``correction_weight ** (K - k)``."""
    ce = F.cross_entropy(out["logits"], labels)
    corrections = out.get("correction") or []
    corr = ce.new_zeros(())
    if corrections and correction_weight > 0:
        k_total = len(corrections)
        for k, c in enumerate(corrections):
            corr = corr + correction_weight ** (k_total - k) * F.cross_entropy(c["logits"], labels)
    return ce + corr, ce, corr


def _train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, splits: StructureSplits,
                 cfg: dict, epoch: int, device: torch.device) -> dict[str, float]:
    t = cfg["train"]
    generator = torch.Generator().manual_seed(int(t["seed"]) * 1_000_003 + epoch)
    order = torch.randperm(len(splits.train_y), generator=generator)
    steps = math.ceil(len(order) / t["batch_size"])
    if t["max_steps_per_epoch"]:
        steps = min(steps, int(t["max_steps_per_epoch"]))
    fpc = getattr(model, "deq_cfg", {}).get("fp_correction", {})
    correction_weight = float(fpc.get("weight", 0.0)) if fpc.get("states") else 0.0
    dtype = next(model.parameters()).dtype
    from tqdm.auto import tqdm

    model.train()
    loss_sum = corr_sum = correct = seen = 0.0
    f_evals, b_evals, graph_steps, converged, seconds = [], [], [], [], 0.0
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{t['epochs']} [{_solver_name(model)}]", unit="batch",
               disable=not t["progress"], leave=False)
    for step, batch in enumerate(_batches(splits.train_graphs, t["batch_size"], order)):
        if step >= steps:
            break
        start = time.perf_counter()
        batch = batch.to(device, dtype)
        labels = batch.labels
        optimizer.zero_grad(set_to_none=True)
        out = model(batch)
        loss, ce, corr = _classification_loss(out, labels, correction_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {step + 1}; "
                                     f"try a lower train.lr (now {t['lr']})")
        loss.backward()
        if t["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
        optimizer.step()
        scheduler.step()
        seconds += time.perf_counter() - start
        s, _, nfe = _solver_numbers(model, out, batch.num_graphs)
        stats = out.get("solver")
        f_evals.append(nfe)
        b_evals.append(stats.backward.get("nfe", 0) if stats is not None else 0)
        graph_steps.append(float(s.float().mean()))
        converged.append(float(stats.converged.float().mean()) if stats is not None else 1.0)
        n = len(labels)
        loss_sum += float(ce.detach()) * n
        corr_sum += float(corr.detach()) * n
        correct += float((out["logits"].detach().argmax(1) == labels).sum())
        seen += n
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", f_evals=nfe)
        bar.update(1)
    bar.close()
    return {"train_loss": loss_sum / seen, "correction_loss": corr_sum / seen, "train_acc": correct / seen,
            "mean_f_evals": float(np.mean(f_evals)), "mean_b_evals": float(np.mean(b_evals)),
            "mean_steps": float(np.mean(graph_steps)), "converged_fraction": float(np.mean(converged)),
            "train_seconds": seconds}


def train_structure_classifier(cfg: dict, run_dir: str | Path, *, resume: str | Path | None = None,
                               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train a graph-level classifier on labelled 3D structures; write the run directory; return a summary.

    Summary keys as :func:`dequiformer.imaging.training.train_classifier` (``run_dir``,
    ``solver`` — ``"explicit"`` for equiformer_v2 —, ``epochs``, ``train_acc``, ``test_acc``,
    ``best_test_acc``, ``seconds``, ``seconds_to_target``, ``mean_f_evals``, ``mean_b_evals``,
    ``mean_steps`` (f evaluations until each structure converged), ``converged_fraction``,
    ``parameters``, ``history``) plus ``route: "structure"`` and ``model``.
    """
    cfg = resolve_structure_config(cfg)
    t = cfg["train"]
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if t["num_threads"]:
        torch.set_num_threads(int(t["num_threads"]))
    device = _device(str(t["device"]))
    m = cfg["model"]
    splits = load_structure_splits(cfg["data"], float(m.get("cutoff", MODEL_DEFAULTS["cutoff"])),
                                   m.get("max_neighbors", MODEL_DEFAULTS["max_neighbors"]), _DTYPES[t["dtype"]])
    cfg["model"] = _complete_model_cfg(cfg["model"], splits)
    torch.manual_seed(int(t["seed"]))
    model = _build(cfg, device)
    optimizer, scheduler, history, best, start_epoch = _optimizer_and_resume(
        model, cfg, len(splits.train_y), resume, device, CHECKPOINT_FORMAT, "structure classifier", log)
    solver = _solver_name(model)
    log(f"{m['name']} classifier: {_num_parameters(model):,} parameters, solver {solver}, "
        f"{len(splits.train_y)} train / {len(splits.test_y)} test structures, {len(splits.class_names)} classes, "
        f"{device}")
    return _fit_epochs(model, optimizer, scheduler, splits, cfg, device, run_dir, history, best, start_epoch,
                       train_epoch=_train_epoch, evaluate=_evaluate, test_inputs=splits.test_graphs,
                       checkpoint_format=CHECKPOINT_FORMAT, solver=solver, parameters=_num_parameters(model),
                       log=log, metric_columns=STRUCTURE_METRIC_COLUMNS, test_extras=("mean_steps",),
                       log_extra=lambda row: f", steps/structure {row['mean_steps']:.1f}",
                       matrix_label=f"{m['name']}, {solver}", summary_head={"route": "structure", "model": m["name"]})


# --------------------------------------------------------------------------- predict
def predict_structure_split(checkpoint: str | Path, cfg: dict | None, split: str, out: str | Path | None,
                            batch_size: int = 64, device: str = "auto") -> dict[str, Any]:
    """Predictions of a structure-classifier checkpoint on a split of its data, written as CSV.

    ``cfg``: config whose ``data`` section names the structures (``None``: the checkpoint's
    own). ``split``: ``test``, ``train`` or ``all`` (train then test). ``out`` defaults to
    ``predictions_<split>.csv`` beside the checkpoint. Returns the report of
    :func:`dequiformer.imaging.training.write_predictions_csv` plus ``checkpoint``,
    ``split``, ``solver`` and ``mean_steps``.
    """
    dev = _device(device)
    model, ckpt = load_structure_classifier(checkpoint, dev)
    data_cfg = (cfg if cfg is not None else ckpt["config"]).get("data") or {}
    dtype = next(model.parameters()).dtype
    splits = load_structure_splits(data_cfg, model.cutoff, model.max_neighbors, dtype)
    class_names = list(ckpt["class_names"])
    if len(splits.class_names) != len(class_names):
        raise ValueError(f"{checkpoint}: model has {len(class_names)} classes but data.path "
                         f"{data_cfg.get('path')} has {len(splits.class_names)}")
    if split == "train":
        graphs, y, ids = splits.train_graphs, splits.train_y, splits.train_ids
    elif split == "test":
        graphs, y, ids = splits.test_graphs, splits.test_y, splits.test_ids
    elif split == "all":
        graphs, y = splits.train_graphs + splits.test_graphs, torch.cat([splits.train_y, splits.test_y])
        ids = splits.train_ids + splits.test_ids
    else:
        raise ValueError(f"split must be test, train or all, got {split!r}")
    out_path = Path(out) if out is not None else Path(checkpoint).parent / f"predictions_{split}.csv"
    result = predict_structures(model, graphs, batch_size, dev)
    report = write_predictions_csv(result, class_names, y, ids, out_path)
    report.update(checkpoint=str(checkpoint), split=split, solver=_solver_name(model),
                  mean_steps=_nan_to_none(result["mean_steps"]))
    return report
