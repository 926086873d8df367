"""The 3D route: graph-level classification of structures with DEQuiformer (or explicit EquiformerV2).

The same labels as the image route, learned from the atoms themselves. A config takes this
route when ``model.name`` is ``dequiformer`` or ``equiformer_v2``; ``model.task`` must be
``classification`` (:func:`dequiformer.classify.config.resolve_structure_config`). Graphs
are built once per structure with the model's ``cutoff`` / ``max_neighbors``
(:func:`dequiformer.classify.splits.load_structure_splits`).

The loss is the cross entropy of the logits plus, for DEQuiformer, fixed-point correction
terms on the decoded intermediate states: with ``K`` states (earliest first) term ``k`` has
weight ``deq.fp_correction.weight ** (K - k)``, as in the force-field trainer. The run
directory holds the image route's files, columns and summary keys, plus the metrics
``test_mean_steps`` and ``correction_loss`` and the summary fields ``route`` and ``model``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.graph import AtomicGraph
from ..models import build_model
from ..models.hparams import DEFAULTS as MODEL_DEFAULTS
from .checkpoint import load_classifier_checkpoint
from ..device import resolve_device
from .config import DTYPES, resolve_structure_config
from .loop import LogHook, Route, Step, fit
from .report import METRIC_COLUMNS
from .splits import StructureSplits, load_structure_splits

__all__ = ["STRUCTURE_METRIC_COLUMNS", "StructureRoute", "build_structure_model", "classification_loss",
           "load_structure_classifier", "predict_structures", "train_structure_classifier"]

STRUCTURE_METRIC_COLUMNS = (*METRIC_COLUMNS[:11], "test_mean_steps", *METRIC_COLUMNS[11:], "correction_loss")


def _complete_model_cfg(model_cfg: Mapping[str, Any], splits: StructureSplits) -> dict[str, Any]:
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
    """Collated batches of ``graphs`` in ``order`` (default: as stored)."""
    index = list(range(len(graphs))) if order is None else [int(i) for i in order]
    for start in range(0, len(index), batch_size):
        yield AtomicGraph.collate([graphs[i] for i in index[start:start + batch_size]])


def _solver_numbers(model: torch.nn.Module, out: Mapping[str, Any], num_graphs: int
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(steps [B], residual [B], f evaluations)``; the explicit model counts its blocks."""
    stats = out.get("solver")
    if stats is None:
        n_blocks = int(model.hparams["num_layers"])
        return torch.full((num_graphs,), n_blocks), torch.zeros(num_graphs), n_blocks
    return stats.steps.detach().cpu(), stats.residual.detach().cpu().float(), int(stats.nfe)


def _solver_name(model: torch.nn.Module) -> str:
    return model.deq_cfg["solver"] if hasattr(model, "deq_cfg") else "explicit"


def build_structure_model(cfg: Mapping[str, Any], device: torch.device | str) -> torch.nn.Module:
    """The configured model (``deq`` only for ``dequiformer``) on ``device`` in ``train.dtype``."""
    deq = cfg["deq"] if cfg["model"]["name"] == "dequiformer" else None
    return build_model(cfg["model"], deq).to(device=device, dtype=DTYPES[cfg["train"]["dtype"]])


def classification_loss(out: Mapping[str, Any], labels: torch.Tensor, correction_weight: float
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


class StructureRoute(Route):
    """DEQuiformer / EquiformerV2 with a classification head on :class:`StructureSplits`."""

    kind = "structure"
    noun = "structures"
    metric_columns = STRUCTURE_METRIC_COLUMNS
    test_extras = ("mean_steps",)

    def __init__(self, cfg: dict[str, Any], model: torch.nn.Module, splits: StructureSplits,
                 device: torch.device) -> None:
        super().__init__(cfg, model, splits, device)
        self.dtype = next(model.parameters()).dtype
        fpc = getattr(model, "deq_cfg", {}).get("fp_correction", {})
        self.correction_weight = float(fpc.get("weight", 0.0)) if fpc.get("states") else 0.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "StructureRoute":
        """Resolve ``cfg``, read the structures and build their graphs, fill ``num_classes`` /
        ``avg_degree`` from them, build the model (seeded by ``train.seed``) on ``train.device``."""
        cfg = resolve_structure_config(cfg)
        t, m = cfg["train"], cfg["model"]
        if t["num_threads"]:
            torch.set_num_threads(int(t["num_threads"]))
        device = resolve_device(str(t["device"]), what="train.device")
        splits = load_structure_splits(cfg["data"], float(m.get("cutoff", MODEL_DEFAULTS["cutoff"])),
                                       m.get("max_neighbors", MODEL_DEFAULTS["max_neighbors"]), DTYPES[t["dtype"]])
        cfg["model"] = _complete_model_cfg(m, splits)
        torch.manual_seed(int(t["seed"]))
        return cls(cfg, build_structure_model(cfg, device), splits, device)

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], data_cfg: Mapping[str, Any],
                        device: torch.device) -> "StructureRoute":
        """The checkpoint's model (eval mode) on the structures of ``data_cfg`` (graphs with its cutoff)."""
        model = _model_from_state(state, device)
        splits = load_structure_splits(data_cfg, model.cutoff, model.max_neighbors, next(model.parameters()).dtype)
        return cls(dict(state["config"]), model, splits, device)

    @property
    def solver(self) -> str:
        return _solver_name(self.model)

    @property
    def title(self) -> str:
        return f"{self.cfg['model']['name']} classifier"

    @property
    def matrix_label(self) -> str:
        return f"{self.cfg['model']['name']}, {self.solver}"

    @property
    def summary_head(self) -> dict[str, Any]:
        return {"route": "structure", "model": self.cfg["model"]["name"]}

    def log_extra(self, row: dict[str, Any]) -> str:
        return f", steps/structure {row['mean_steps']:.1f}"

    def train_batches(self, order: torch.Tensor, generator: torch.Generator) -> Iterator[AtomicGraph]:
        return _batches(self.splits.train_graphs, self.cfg["train"]["batch_size"], order)

    def forward(self, batch: AtomicGraph) -> Step:
        batch = batch.to(self.device, self.dtype)
        out = self.model(batch)
        loss, ce, corr = classification_loss(out, batch.labels, self.correction_weight)
        steps, _, nfe = _solver_numbers(self.model, out, batch.num_graphs)
        stats = out.get("solver")
        return Step(loss=loss, terms={"train_loss": ce, "correction_loss": corr}, logits=out["logits"],
                    labels=batch.labels, f_evals=nfe, steps=steps,
                    converged=float(stats.converged.float().mean()) if stats is not None else 1.0, stats=stats)

    def predict(self, inputs: Sequence[AtomicGraph], batch_size: int) -> dict[str, Any]:
        return predict_structures(self.model, inputs, batch_size, self.device)


def _model_from_state(state: Mapping[str, Any], device: torch.device | str) -> torch.nn.Module:
    model = build_structure_model(state["config"], device)
    model.load_state_dict(state["model"])
    return model.eval()


def load_structure_classifier(checkpoint: str | Path, device: str | torch.device = "cpu"
                              ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model of a structure-classifier checkpoint: ``(model in eval mode, checkpoint)``."""
    state = load_classifier_checkpoint(checkpoint, map_location=device, route=StructureRoute.kind)
    return _model_from_state(state, device), state


def train_structure_classifier(cfg: Mapping[str, Any], run_dir: str | Path, *, resume: str | Path | None = None,
                               log: LogHook | None = None) -> dict[str, Any]:
    """Train a graph-level classifier on labelled 3D structures; write the run directory; return the summary.

    Summary keys as :func:`dequiformer.classify.images.train_image_classifier` (``solver`` is
    ``"explicit"`` for equiformer_v2; ``mean_steps``: f evaluations until each structure
    converged) plus ``route: "structure"`` and ``model``. ``log``: also receives each progress line.
    """
    return fit(StructureRoute.from_config(cfg), run_dir, resume=resume, log=log)
