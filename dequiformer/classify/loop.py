"""The one training loop of the graph-level classifiers, driven by a :class:`Route`.

A route (:class:`dequiformer.classify.images.ImageRoute`,
:class:`dequiformer.classify.structures.StructureRoute`) knows its data, its model and how to
batch, forward and predict; :func:`fit` does the rest the same way for every route: Adam with
a per-step cosine schedule, cross entropy, per-epoch evaluation on the test split,
``metrics.csv``, ``last.pt`` / ``best.pt`` (:mod:`dequiformer.classify.checkpoint`), the
confusion matrix and ``summary.json`` (:mod:`dequiformer.classify.report`).

Epoch ``e`` visits the training samples in an order drawn from ``(train.seed, e)``, so a
resumed run sees the same batches as an uninterrupted one. Progress lines go to this
module's logger (:mod:`dequiformer.log` sends them to stdout); a ``log`` callable, where
given, receives each of them too.
"""
from __future__ import annotations

import abc
import itertools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..log import ensure_logging
from ..rundir import set_rng_state, write_json
from ..train.metrics_log import write_metrics_csv
from .checkpoint import classifier_state, load_classifier_checkpoint, save_classifier_checkpoint
from .report import METRIC_COLUMNS, save_confusion_matrix, summarize

__all__ = ["LogHook", "Route", "Step", "emit", "evaluate", "fit", "make_optimizer", "steps_per_epoch",
           "train_epoch"]

logger = logging.getLogger(__name__)
LogHook = Callable[[str], None]


def emit(message: str, log: LogHook | None = None, via: logging.Logger = logger) -> None:
    """Log ``message`` at INFO on ``via``, then hand it to ``log`` (a caller's hook) when given."""
    via.info(message)
    if log is not None:
        log(message)


@dataclass
class Step:
    """One training batch's forward pass, as the loop needs it."""

    loss: torch.Tensor               # scalar that is back-propagated
    terms: dict[str, torch.Tensor]   # batch-mean terms kept as metrics; ``train_loss``: the cross entropy
    logits: torch.Tensor             # [b, classes]
    labels: torch.Tensor             # [b]
    f_evals: int                     # batch f evaluations of the forward solve (explicit model: its blocks)
    steps: torch.Tensor              # [b] f evaluations until each sample converged
    converged: float                 # fraction of the batch whose forward solve reached deq.tol
    stats: Any = None                # solver stats; backward() fills in ``stats.backward["nfe"]``


class Route(abc.ABC):
    """One kind of data and model: ``cfg`` (resolved), ``model``, ``splits`` (``train_y``,
    ``test_y``, ``class_names``, ``select(split)``) and the ``device`` it runs on."""

    kind: str = ""                            # the checkpoint's ``route`` field
    noun: str = "samples"                     # what a sample is, for the start line
    metric_columns: Sequence[str] = METRIC_COLUMNS
    test_extras: tuple[str, ...] = ()         # keys of predict()'s result also kept as ``test_<key>``

    def __init__(self, cfg: dict[str, Any], model: torch.nn.Module, splits: Any, device: torch.device) -> None:
        self.cfg, self.model, self.splits, self.device = cfg, model, splits, device

    @property
    @abc.abstractmethod
    def solver(self) -> str:
        """The fixed-point solver's name (``"explicit"`` for a model without one)."""

    @property
    def title(self) -> str:
        """The model's name in the start line."""
        return self.kind

    @property
    def parameters(self) -> int:
        """Number of model parameters."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def matrix_label(self) -> str:
        """The confusion-matrix title's label."""
        return self.solver

    @property
    def summary_head(self) -> dict[str, Any]:
        """Summary fields placed between ``run_dir`` and ``solver``."""
        return {}

    def log_extra(self, row: dict[str, Any]) -> str:
        """Text after the backward f evaluations in an epoch's line."""
        return ""

    @abc.abstractmethod
    def train_batches(self, order: torch.Tensor, generator: torch.Generator) -> Iterator[Any]:
        """Training batches (on the CPU) in ``order`` (indices ``[n_train]``); ``generator``: the epoch's RNG."""

    @abc.abstractmethod
    def forward(self, batch: Any) -> Step:
        """Move ``batch`` to the device, run the model in training mode, compute the loss."""

    @abc.abstractmethod
    def predict(self, inputs: Any, batch_size: int) -> dict[str, Any]:
        """``{"probs": [n, classes], "steps": [n], "residual": [n], "mean_f_evals", *test_extras}``."""


# --------------------------------------------------------------------------- optimizer
def steps_per_epoch(n_train: int, train_cfg: dict[str, Any]) -> int:
    """Optimizer steps in one epoch: all batches, at most ``train.max_steps_per_epoch``."""
    steps = math.ceil(n_train / train_cfg["batch_size"])
    if train_cfg["max_steps_per_epoch"]:
        steps = min(steps, int(train_cfg["max_steps_per_epoch"]))
    return steps


def make_optimizer(model: torch.nn.Module, train_cfg: dict[str, Any], n_train: int) -> tuple[Any, Any]:
    """Adam and a cosine schedule stepped once per batch over all epochs: ``(optimizer, scheduler)``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=float(train_cfg["lr"]),
                                 weight_decay=float(train_cfg["weight_decay"]))
    total = train_cfg["epochs"] * steps_per_epoch(n_train, train_cfg)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=float(train_cfg["min_lr"]))
    return optimizer, scheduler


def _resume(route: Route, optimizer: Any, scheduler: Any, path: str | Path, log: LogHook | None
            ) -> tuple[list[dict[str, Any]], float, int]:
    """Load a checkpoint of the same route and model / data settings into the run:
    ``(history, best_test_acc, first epoch to run)``."""
    # on the CPU: the RNG states must stay there; load_state_dict moves the rest to the model
    state = load_classifier_checkpoint(path, map_location="cpu", route=route.kind)
    cfg = route.cfg
    for section in ("model", "data"):
        if state["config"][section] != cfg[section]:
            diff = sorted(k for k in set(cfg[section]) | set(state["config"][section])
                          if cfg[section].get(k) != state["config"][section].get(k))
            raise ValueError(f"--resume: {path} was trained with different {section} settings ({diff})")
    route.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    total = cfg["train"]["epochs"] * steps_per_epoch(len(route.splits.train_y), cfg["train"])
    if scheduler.T_max != total:  # train.epochs changed: stretch the remaining cosine
        emit(f"note: train.epochs is now {cfg['train']['epochs']} (cosine schedule length {scheduler.T_max} -> "
             f"{total} steps)", log)
        scheduler.T_max = total
    set_rng_state(state["rng"])
    emit(f"resumed from {path} after epoch {state['epoch']}", log)
    return list(state["history"]), float(state["best_test_acc"]), int(state["epoch"]) + 1


# --------------------------------------------------------------------------- one epoch
class _Tally:
    """Running sums of one training epoch."""

    def __init__(self) -> None:
        self.terms: dict[str, float] = {}
        self.correct = self.seen = self.seconds = 0.0
        self.f_evals: list[int] = []
        self.b_evals: list[int] = []
        self.steps: list[float] = []
        self.converged: list[float] = []

    def add(self, step: Step, seconds: float) -> None:
        n = len(step.labels)
        for name, term in step.terms.items():
            self.terms[name] = self.terms.get(name, 0.0) + float(term.detach()) * n
        self.correct += float((step.logits.detach().argmax(1) == step.labels).sum())
        self.seen += n
        self.seconds += seconds
        self.f_evals.append(step.f_evals)
        self.b_evals.append(step.stats.backward.get("nfe", 0) if step.stats is not None else 0)
        self.steps.append(float(step.steps.float().mean()))
        self.converged.append(step.converged)

    def row(self) -> dict[str, float]:
        """Sample-weighted means of the loss terms and accuracy; batch means of the solver numbers."""
        return {**{name: total / self.seen for name, total in self.terms.items()}, "train_acc": self.correct / self.seen,
                "mean_f_evals": float(np.mean(self.f_evals)), "mean_b_evals": float(np.mean(self.b_evals)),
                "mean_steps": float(np.mean(self.steps)), "converged_fraction": float(np.mean(self.converged)),
                "train_seconds": self.seconds}


def train_epoch(route: Route, optimizer: Any, scheduler: Any, epoch: int) -> dict[str, float]:
    """Train one epoch; the metrics row's training fields (``train_seconds``: optimizer steps only)."""
    from tqdm.auto import tqdm  # imported here: only training draws progress bars

    t = route.cfg["train"]
    generator = torch.Generator().manual_seed(int(t["seed"]) * 1_000_003 + epoch)
    order = torch.randperm(len(route.splits.train_y), generator=generator)
    steps = steps_per_epoch(len(order), t)
    route.model.train()
    tally = _Tally()
    bar = tqdm(total=steps, desc=f"epoch {epoch}/{t['epochs']} [{route.solver}]", unit="batch",
               disable=not t["progress"], leave=False)
    for i, batch in enumerate(itertools.islice(route.train_batches(order, generator), steps)):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step = route.forward(batch)
        if not torch.isfinite(step.loss):
            raise FloatingPointError(f"non-finite training loss at epoch {epoch}, step {i + 1}; "
                                     f"try a lower train.lr (now {t['lr']})")
        step.loss.backward()
        if t.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(route.model.parameters(), float(t["grad_clip"]))
        optimizer.step()
        scheduler.step()
        tally.add(step, time.perf_counter() - start)
        bar.set_postfix(loss=f"{tally.terms['train_loss'] / tally.seen:.3f}", acc=f"{tally.correct / tally.seen:.3f}",
                        f_evals=step.f_evals)
        bar.update(1)
    bar.close()
    return tally.row()


def evaluate(route: Route, inputs: Any, y: torch.Tensor, batch_size: int) -> dict[str, Any]:
    """``{"loss" (mean cross entropy), "acc", "mean_f_evals", "pred" [n], *test_extras}`` on
    ``inputs`` with labels ``y [n]``; NaN everywhere when ``y`` is empty."""
    if len(y) == 0:
        nan = float("nan")
        return {"loss": nan, "acc": nan, "mean_f_evals": nan, **{k: nan for k in route.test_extras},
                "pred": torch.zeros(0)}
    out = route.predict(inputs, batch_size)
    probs = out["probs"].clamp_min(1e-12)
    pred = probs.argmax(1)
    return {"loss": float(F.nll_loss(probs.log(), y)), "acc": float((pred == y).float().mean()),
            "mean_f_evals": out["mean_f_evals"], **{k: out[k] for k in route.test_extras}, "pred": pred}


# --------------------------------------------------------------------------- the run
def _eval_batch_size(route: Route) -> int:
    t = route.cfg["train"]
    return int(t["eval_batch_size"] or t["batch_size"])


def _epoch(route: Route, optimizer: Any, scheduler: Any, epoch: int, history: list[dict[str, Any]], best: float,
           run_dir: Path, log: LogHook | None) -> float:
    """Train and evaluate ``epoch``, append its row, write ``metrics.csv`` and the checkpoints,
    log the epoch line; returns the best score so far (test accuracy, else train accuracy)."""
    row: dict[str, Any] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
    row.update(train_epoch(route, optimizer, scheduler, epoch))
    start = time.perf_counter()
    test_x, test_y, _ = route.splits.select("test")
    test = evaluate(route, test_x, test_y, _eval_batch_size(route))
    row.update(test_loss=test["loss"], test_acc=test["acc"], test_mean_f_evals=test["mean_f_evals"],
               **{f"test_{k}": test[k] for k in route.test_extras}, eval_seconds=time.perf_counter() - start)
    row["elapsed_train_seconds"] = (history[-1]["elapsed_train_seconds"] if history else 0.0) + row["train_seconds"]
    history.append(row)
    write_metrics_csv(run_dir / "metrics.csv", history, route.metric_columns)
    score = row["train_acc"] if math.isnan(row["test_acc"]) else row["test_acc"]
    improved, best = score > best, max(best, score)
    state = classifier_state(route.kind, route.cfg, route.splits.class_names, route.model, optimizer, scheduler,
                             epoch, history, best)
    save_classifier_checkpoint(state, run_dir / "last.pt")
    if improved:
        save_classifier_checkpoint(state, run_dir / "best.pt")
    emit(f"epoch {epoch}/{route.cfg['train']['epochs']}: train loss {row['train_loss']:.4f} acc "
         f"{row['train_acc']:.4f} | test loss {row['test_loss']:.4f} acc {row['test_acc']:.4f} | f evals/batch "
         f"{row['mean_f_evals']:.1f} (backward {row['mean_b_evals']:.1f}){route.log_extra(row)} | "
         f"{row['train_seconds']:.1f} s", log)
    return best


def _finish(route: Route, history: list[dict[str, Any]], best: float, run_dir: Path) -> dict[str, Any]:
    """The confusion matrix on the test split and ``summary.json``; returns the summary."""
    if not history:
        raise ValueError(f"nothing to train: train.epochs={route.cfg['train']['epochs']} and the checkpoint ends there")
    test_x, test_y, _ = route.splits.select("test")
    if len(test_y):
        final = evaluate(route, test_x, test_y, _eval_batch_size(route))
        save_confusion_matrix(test_y, final["pred"], route.splits.class_names, run_dir / "confusion_matrix.png",
                              f"test accuracy {final['acc']:.3f} ({route.matrix_label}, "
                              f"epoch {history[-1]['epoch']})")
    summary = summarize(history, best, float(route.cfg["train"]["target_accuracy"]), run_dir, route.solver,
                        route.parameters, route.summary_head)
    write_json(run_dir / "summary.json", summary)
    return summary


def fit(route: Route, run_dir: str | Path, *, resume: str | Path | None = None,
        log: LogHook | None = None) -> dict[str, Any]:
    """Train ``route``'s model up to epoch ``train.epochs``, writing the run directory; returns
    the summary (:func:`dequiformer.classify.report.summarize`).

    ``resume``: a checkpoint of the same route whose ``model`` and ``data`` sections equal the
    config's; training continues after its epoch. ``log``: also receives each progress line.
    """
    ensure_logging()  # used from Python without the CLI: lines still show
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    optimizer, scheduler = make_optimizer(route.model, route.cfg["train"], len(route.splits.train_y))
    history: list[dict[str, Any]] = []
    best, start_epoch = -1.0, 1
    if resume is not None:
        history, best, start_epoch = _resume(route, optimizer, scheduler, resume, log)
    emit(f"{route.title}: {route.parameters:,} parameters, solver {route.solver}, {len(route.splits.train_y)} train / "
         f"{len(route.splits.test_y)} test {route.noun}, {len(route.splits.class_names)} classes, {route.device}", log)
    for epoch in range(start_epoch, route.cfg["train"]["epochs"] + 1):
        best = _epoch(route, optimizer, scheduler, epoch, history, best, run_dir, log)
    return _finish(route, history, best, run_dir)
