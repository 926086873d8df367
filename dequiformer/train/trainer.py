"""Training loop: data, model, AdamW + warmup/cosine, EMA, DDP, checkpoints, metrics.

Run directory layout: ``config.yaml`` (resolved config), ``splits.npz``, ``metrics.csv``,
``last.pt`` (every epoch), ``best.pt`` (best validation error, ``train.best_metric``; with
``train.stage_two`` the best epoch of the second stage), ``tensorboard/``.
"""
from __future__ import annotations

import contextlib
import logging
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import save_config
from ..log import add_log_file, ensure_logging, remove_log_file
from ..memory import current_rss_mb, peak_rss_mb
from ..data.normalization import Normalizer, fit_normalizer
from ..data.splits import datasets_from_config
from ..models import build_model
from ..models.hparams import resolve
from ..rundir import rng_state, save_checkpoint, set_rng_state
from .dataset import GraphDataset, apply_normalization, epoch_batches, model_scales
from .distributed import DistInfo, all_gather_object, all_reduce_dict, all_reduce_sums, barrier, init_distributed, wrap_ddp
from .ema import ExponentialMovingAverage
from .evaluate import evaluate, stress_request
from .fixed_point_store import FramewiseFixedPoints
from .losses import ForceFieldLoss, error_sums
from .metrics_log import TensorBoardLog, epoch_line, write_metrics_csv
from .optimizer import build_optimizer
from .schedules import CosineWarmupSchedule, warmup_steps_from
from .settings import check_config, resolve_data_extras, resolve_run_config, resolve_train, torch_dtype

logger = logging.getLogger(__name__)


class Trainer:
    """Train a force field from a config into ``run_dir``.

    Args:
        cfg: config dict (sections model, deq, data, train); for a resumed run the checkpoint's.
        run_dir: output directory (created by rank 0).
        resume_state: a loaded ``last.pt`` to continue from, or None.
        info: distributed context (default: detected from the torchrun environment).
    """

    def __init__(self, cfg: dict, run_dir: str | Path, resume_state: dict | None = None,
                 info: DistInfo | None = None) -> None:
        check_config(cfg)
        self.run_dir = Path(run_dir)
        tcfg = resolve_train(cfg["train"])
        self.info = info or init_distributed(tcfg["device"])
        self.device = self.info.device
        self.dtype = torch_dtype(tcfg["dtype"])
        if tcfg["num_threads"]:
            torch.set_num_threads(int(tcfg["num_threads"]))
        seed = int(tcfg["seed"])
        random.seed(seed + self.info.rank)
        np.random.seed((seed + self.info.rank) % 2**32)
        torch.manual_seed(seed + self.info.rank)
        try:  # train.log is attached only while the trainer works (here and in fit)
            train_frames = self._load_data(cfg)
            self._build_model(train_frames, resume_state, seed)
            self._build_optimization()
        finally:
            if self.info.is_main:
                remove_log_file(self.run_dir / "train.log")
        self.elapsed = 0.0  # wall seconds of training + validation, carried over on resume
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = self._no_best(stage=1)
        self._partial: dict[str, Any] | None = None  # progress of a checkpoint written mid-epoch
        if resume_state is not None:
            self._restore(resume_state)
        self.ddp_model = wrap_ddp(self.model, self.info, bool(self.tcfg["find_unused_parameters"]))
        self.tb = TensorBoardLog(self.run_dir / "tensorboard", bool(self.tcfg["tensorboard"]) and self.info.is_main)
        if self.info.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")

    def _load_data(self, cfg: dict) -> Any:
        """Splits (rank 0 makes or reuses ``splits.npz``, the others read it), graph datasets, the
        run's resolved config and units; returns the training frames."""
        data_cfg = resolve_data_extras(cfg["data"])
        ensure_logging(rank=self.info.rank)
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            add_log_file(self.run_dir / "train.log", rank=self.info.rank)
            sets = datasets_from_config(data_cfg, self.run_dir)
        barrier(self.info)
        if not self.info.is_main:
            sets = datasets_from_config(data_cfg, self.run_dir)
        train_frames, val_frames = sets["train"], sets["val"]
        if len(train_frames) == 0:
            raise ValueError(f"{train_frames.source}: the training split is empty (check data.n_train)")
        self.units = dict(train_frames.units)
        hp = resolve({k: (1.0 if v == "auto" else v) for k, v in cfg["model"].items()})
        cache = bool(data_cfg["cache_graphs"])
        self.train_graphs = GraphDataset(train_frames, hp["cutoff"], hp["max_neighbors"], self.dtype, cache, name="train")
        self.val_graphs = (GraphDataset(val_frames, hp["cutoff"], hp["max_neighbors"], self.dtype, cache, name="val")
                           if val_frames is not None and len(val_frames) else None)
        self.cfg = resolve_run_config(cfg, self.units, self.train_graphs)
        self.tcfg = self.cfg["train"]
        return train_frames

    def _build_model(self, train_frames: Any, resume_state: dict | None, seed: int) -> None:
        """Normalisation (fitted or restored), the model with it, ``init_from`` weights, the loss."""
        ncfg = self.cfg["data"]["normalization"]
        if resume_state is not None and resume_state.get("normalization"):
            self.normalizer = Normalizer.from_dict(resume_state["normalization"])
        else:
            self.normalizer = fit_normalizer(train_frames, mode=ncfg["mode"], scale=ncfg["scale"],
                                             max_frames=ncfg.get("max_frames"), units=self.units, seed=seed)
        torch.manual_seed(seed)  # identical initial weights (and EMA start) on every rank
        self.model = build_model(self.cfg["model"], self.cfg.get("deq")).to(dtype=self.dtype)
        torch.manual_seed(seed + self.info.rank)  # per-rank dropout streams
        self.model.scaling.double()
        apply_normalization(self.model, self.normalizer)
        self.model.to(self.device)
        if resume_state is None and self.tcfg["init_from"]:
            self._init_from(str(self.tcfg["init_from"]))
        if self.model.conservative and float(self.tcfg["grad_force_weight"]) > 0:
            raise ValueError("train.grad_force_weight: a conservative model (model.forces: conservative) already "
                             "trains its forces as -dE/dpos; set grad_force_weight to 0")
        self.implicit = self.model.is_implicit
        if self.implicit and not self.info.enabled:  # (under DDP a second backward would sync twice)
            self.model.defer_penalties = True
        fpc = self.model.deq_cfg["fp_correction"] if self.implicit else {}
        self.loss_fn = ForceFieldLoss(self.tcfg["energy_loss"], self.tcfg["force_loss"], self.tcfg["energy_weight"],
                                      self.tcfg["force_weight"], float(fpc.get("weight", 0.0)) if fpc.get("states") else 0.0,
                                      self.tcfg["grad_force_weight"], self.tcfg["stress_weight"])

    def _build_optimization(self) -> None:
        """AdamW, the cosine schedule, EMA and the per-frame fixed-point store."""
        self.optimizer = build_optimizer(self.model, self.tcfg)
        self.steps_per_epoch = len(self._train_batches(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"no training batches: {len(self.train_graphs)} training structures for "
                             f"{self.info.world_size} processes")
        self.schedule = CosineWarmupSchedule(
            self.optimizer, self.tcfg["epochs"] * self.steps_per_epoch, warmup_steps_from(self.tcfg, self.steps_per_epoch),
            self.tcfg["lr"], self.tcfg["warmup_lr"], self.tcfg["min_lr"],
            budget_seconds=self.tcfg["max_seconds"] if self.tcfg["lr_schedule"] == "seconds" else None,
        )
        two = self.tcfg["stage_two"]
        self.stage_two_start = two["start"]
        self.stage_two_forces = two["forces"]
        self.stage_two_weights = {k: float(v) for k, v in two.items() if k not in ("start", "forces") and v is not None}
        if self.stage_two_forces == "conservative":
            if self.model.task != "regression":
                raise ValueError("train.stage_two.forces: a classification model has no forces")
            self.stage_two_weights["grad_force_weight"] = 0.0  # the force loss itself is on -dE/dpos then
        if self.model.conservative and self.stage_two_weights.get("grad_force_weight", 0.0) > 0:
            raise ValueError("train.stage_two.grad_force_weight: a conservative model already trains its forces as "
                             "-dE/dpos; leave it null or 0")
        self.stage = 1
        self.ema = ExponentialMovingAverage(self.model, self.tcfg["ema_decay"]) if self.tcfg["ema_decay"] else None
        store_mb = float(self.tcfg["fixed_point_store_mb"])
        self.fixed_points = FramewiseFixedPoints(store_mb) if self.implicit and store_mb > 0 else None

    def _init_from(self, path: str) -> None:
        """Start from another run's weights (EMA when it has them) and normalisation: the
        fine-tuning recipe, e.g. direct forces first, then ``model.forces: conservative``."""
        from .checkpoint import build_from_checkpoint, load_checkpoint

        where = f"train.init_from {path}"
        state = load_checkpoint(path)
        source = build_from_checkpoint(state, use_ema=True, dtype=self.dtype, where=where)
        try:
            self.model.load_state_dict(source.state_dict())
        except RuntimeError as exc:
            raise ValueError(f"{where}: its weights do not fit this run's model (same architecture needed; "
                             f"{str(exc).splitlines()[0]})") from None
        if state.get("normalization"):
            self.normalizer = Normalizer.from_dict(state["normalization"])
        if self.info.is_main:
            logger.info("initialised from %s (EMA weights: %s)", path, bool(state.get("ema")))

    # ------------------------------------------------------------------ state
    def _train_batches(self, epoch: int) -> list[np.ndarray]:
        return epoch_batches(len(self.train_graphs), self.tcfg["batch_size"], epoch=epoch, seed=self.tcfg["seed"],
                             rank=self.info.rank, world_size=self.info.world_size,
                             max_batches=self.tcfg["max_steps_per_epoch"])

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`_restore` needs (collective under DDP: every rank must call it)."""
        rngs = all_gather_object(rng_state(), self.info)
        return {
            "dequiformer_version": __version__,
            "config": self.cfg,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "rng": rngs,
            "normalization": self.normalizer.to_dict(),
            "units": dict(self.units),
            "elements": [int(z) for z in self.normalizer.elements],
            "metrics": list(self.history),
            "best": dict(self.best),
            "world_size": self.info.world_size,
            "dtype": self.tcfg["dtype"],
            "elapsed": self.elapsed,
            "fixed_points": self.fixed_points.state_dict() if self.fixed_points is not None else None,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:
                warnings.warn("resumed run turns EMA on: the average starts from the current weights", stacklevel=2)
        self.epoch = int(state["epoch"])
        self.step = int(state.get("step", 0))
        self._partial = state.get("partial_epoch")  # a checkpoint written mid-epoch (train.checkpoint_every)
        self.history = list(state.get("metrics") or [])
        self.elapsed = float(state.get("elapsed", 0.0))
        if self.fixed_points is not None and state.get("fixed_points"):
            self.fixed_points.load_state_dict(state["fixed_points"])
        best = dict(state.get("best") or {})
        if "value" in best:
            self.best = best
        elif best.get("epoch") is not None:  # a checkpoint of before train.best_metric: ranked by forces
            self.best = {**self._no_best(stage=1), "epoch": best["epoch"], "value": float(best["val_forces_mae"]),
                         "metric": "forces"}
        rngs = state.get("rng") or []
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        elif rngs:
            warnings.warn(f"checkpoint was written by {len(rngs)} processes, this run has {self.info.world_size}: "
                          f"random states are reseeded, the continuation is not bit-identical", stacklevel=2)

    # ------------------------------------------------------------------ loop
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over this rank's training batches; returns reduced train metrics."""
        from tqdm.auto import tqdm

        self.ddp_model.train()
        scales = model_scales(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        sums: dict[str, float] = {}
        loss_sum, skipped, first, seconds_before = 0.0, 0, 0, 0.0
        batches = self._train_batches(epoch)
        partial, self._partial = self._partial, None
        if partial and int(partial["epoch"]) == epoch:  # resume inside this epoch: same batch order, skip done
            first, loss_sum, skipped = int(partial["batches_done"]), float(partial["loss_sum"]), int(partial["skipped"])
            sums, seconds_before = dict(partial["sums"]), float(partial["seconds"])
        every = int(self.tcfg["checkpoint_every"] or 0)
        t_start = time.perf_counter() - seconds_before
        budget = self.schedule.budget_seconds  # wall-clock schedule: the epoch ends when the budget does
        done = first
        show = bool(self.tcfg["progress"]) and self.info.is_main
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.tcfg['epochs']}", leave=False, file=sys.stderr,
                   disable=None if show else True)  # None: tqdm turns itself off when stderr is not a TTY
        for i, idx in enumerate(bar):
            if i < first:
                continue
            self._enter_stage_two_when_due()
            graph = self.train_graphs.batch(idx, self.device)
            out, parts, ok = self._train_step(idx, graph, scales, params)
            if not ok:
                skipped += 1
                warnings.warn(f"epoch {epoch + 1} step {i}: non-finite gradient (loss {parts['loss']}), step skipped",
                              stacklevel=2)
            run_seconds = self.elapsed + time.perf_counter() - t_start
            self.schedule.step(run_seconds)
            self.step += 1
            done = i + 1
            loss_sum += parts["loss"]
            for key, value in error_sums(out, graph).items():
                sums[key] = max(sums.get(key, 0.0), value) if key == "max_steps" else sums.get(key, 0.0) + value
            if self.info.is_main:
                bar.set_postfix(loss=f"{parts['loss']:.4g}", refresh=False)
                if self.tcfg["log_every"] and (i + 1) % int(self.tcfg["log_every"]) == 0:
                    logger.info("  step %d/%d loss %.5g", i + 1, len(batches), parts["loss"])
            if every and self.step % every == 0 and i + 1 < len(batches):
                self._checkpoint_mid_epoch({"epoch": epoch, "batches_done": i + 1, "loss_sum": loss_sum,
                                            "skipped": skipped, "sums": dict(sums),
                                            "seconds": time.perf_counter() - t_start})
            if budget is not None and self._budget_spent(run_seconds >= budget):
                break
        bar.close()
        ms_per_step = 1000.0 * (time.perf_counter() - t_start) / max(done, 1)
        sums.pop("max_steps", None)
        sums["loss"] = loss_sum
        sums["skipped"] = float(skipped)
        sums = all_reduce_dict(sums, self.info)
        n_batches = max(done, 1)

        def ratio(a: str, b: str) -> float:
            return sums.get(a, 0.0) / sums[b] if sums.get(b) else float("nan")

        return {"loss": sums["loss"] / (self.info.world_size * n_batches), "energy_mae": ratio("energy_abs", "n_energy"),
                "forces_mae": ratio("forces_abs", "n_forces"), "solver_steps": ratio("steps", "n_steps"),
                "bwd_steps": ratio("bwd_steps", "n_bwd_steps"), "ms_per_step": ms_per_step}

    def _no_best(self, stage: int) -> dict[str, Any]:
        return {"epoch": None, "metric": self.tcfg["best_metric"], "value": math.inf, "stage": stage}

    def _enter_stage_two_when_due(self) -> None:
        """Switch to ``train.stage_two``'s loss weights once the run's progress reaches its start
        (also right away in a run resumed past it); best.pt then restarts from the stage's epochs,
        because the stage changes what the model is trained to be best at."""
        if self.stage == 2 or self.stage_two_start is None or self.schedule.progress() < self.stage_two_start:
            return
        self.stage = 2
        for key, value in self.stage_two_weights.items():
            setattr(self.loss_fn, key, value)
        if self.stage_two_forces == "conservative" and not self.model.conservative:
            self._make_conservative()
        if self.best.get("stage", 1) != 2:
            self.best = self._no_best(stage=2)
        if self.info.is_main:
            changes = [f"{k} {v:g}" for k, v in self.stage_two_weights.items()]
            if self.stage_two_forces:
                changes.append(f"forces {self.stage_two_forces}")
            logger.info("stage two from step %d (%.0f %% of the run): %s", self.step,
                        100 * self.schedule.progress(), ", ".join(changes))

    def _make_conservative(self) -> None:
        """``train.stage_two.forces: conservative``: from here on the model's forces are -dE/dpos
        (its direct head is no longer trained), and the run's config says so, so that the
        stage's checkpoints load, evaluate and resume as the conservative model they are."""
        self.model.hparams["forces"] = "conservative"
        self.cfg["model"]["forces"] = "conservative"
        self.tcfg["grad_force_weight"] = 0.0

    def _score(self, row: dict[str, Any]) -> float | None:
        """The ``train.best_metric`` value of an epoch's row (validation; training errors without a
        validation set)."""
        pre = "val" if self.val_graphs is not None else "train"
        energy, forces = row[f"{pre}_energy_mae"], row[f"{pre}_forces_mae"]
        metric = self.tcfg["best_metric"]
        if metric == "forces":
            return forces
        if metric == "energy":
            return energy
        return None if energy is None or forces is None else energy + forces

    def _budget_spent(self, spent_here: bool) -> bool:
        """Whether the wall budget is spent; under DDP when any rank says so (collective), so that
        every rank leaves the epoch at the same step."""
        return all_reduce_sums([float(spent_here)], self.info)[0] > 0

    def step_terms(self, step: int) -> tuple[bool, bool]:
        """Which optional terms training step ``step`` (0-based) computes: the loss on -dE/dpos (a
        double backward; on every ``train.grad_force_every``-th step) and a DEQ's contractivity
        penalties (on every ``deq.penalty_every``-th step); each only when its weight is set."""
        grad_forces = self.loss_fn.grad_force_weight > 0 and step % int(self.tcfg["grad_force_every"]) == 0
        penalties = False
        if self.implicit:
            deq = self.model.deq_cfg
            penalties = ((deq["jacobian_reg"] > 0 or deq["radius_reg"] > 0)
                         and step % int(deq["penalty_every"]) == 0)
        return grad_forces, penalties

    def _train_step(self, idx: np.ndarray, graph: Any, scales: Any, params: list[torch.Tensor]
                    ) -> tuple[dict[str, Any], dict[str, float], bool]:
        """Forward, loss, backward and (unless the gradient is non-finite) one optimizer and EMA
        step on one batch; returns the model outputs, the loss parts and whether the step was taken."""
        n_e, n_f = self.loss_fn.counts(graph)
        if self.info.enabled:
            g_e, g_f = all_reduce_sums([n_e, n_f], self.info)
            denoms = (g_e / self.info.world_size, g_f / self.info.world_size)
        else:
            denoms = (n_e, n_f)
        kwargs: dict[str, Any] = {}
        z0 = self.fixed_points.initial_guess(idx, graph) if self.fixed_points is not None else None
        if z0 is not None:  # warm start, solved to the cold tolerance (not deq.reuse_tol)
            kwargs = {"z0": z0, "tol": float(self.model.deq_cfg["tol"])}
        grad_forces, penalties = self.step_terms(self.step)
        if grad_forces:
            kwargs["grad_forces"] = True
        if self.implicit:  # on the steps that take them, K times as strong (K = deq.penalty_every)
            self.model.penalty_scale = float(self.model.deq_cfg["penalty_every"]) if penalties else 0.0
        if self.loss_fn.stress_weight > 0:
            kwargs.update(stress_request(self.model, graph))
        out = self.ddp_model(graph, **kwargs)
        deferred = out.pop("deferred_penalties", None)
        loss, parts = self.loss_fn(out, graph, scales, denoms, grad_forces=grad_forces)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the DEQ's contractivity penalties, after the step's graph is freed, one at a time
        for term in deferred or ():
            penalty = self.loss_fn.add_penalties(term(), parts)
            penalty.backward()
            parts["loss"] += float(penalty.detach())  # the logged loss includes them, as without deferral
        clip = self.tcfg["clip_grad_norm"]
        norm = torch.nn.utils.clip_grad_norm_(params, float(clip) if clip else math.inf)
        ok = bool(torch.isfinite(norm))  # identical on all ranks: gradients are already reduced
        if ok:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        if self.fixed_points is not None:
            self.fixed_points.update(idx, graph, out["fixed_point"])
        return out, parts, ok

    def _checkpoint_mid_epoch(self, partial: dict[str, Any]) -> None:
        """``last.pt`` with the epoch's progress, so a killed run loses at most ``checkpoint_every``
        steps (collective under DDP: every rank reaches the same step)."""
        state = self.state_dict()
        state["partial_epoch"] = partial
        if self.info.is_main:
            save_checkpoint(state, self.run_dir / "last.pt")
        barrier(self.info)

    def validate(self) -> dict[str, float] | None:
        """Validation metrics with EMA weights when EMA is on (None without a validation set)."""
        if self.val_graphs is None:
            return None
        bs = int(self.tcfg["eval_batch_size"] or self.tcfg["batch_size"])
        with self.ema.average_parameters(self.model) if self.ema is not None else contextlib.nullcontext():
            summary = evaluate(self.model, self.val_graphs, bs, self.device, self.info)
            iters = int(self.tcfg["jacobian_iters"])
            if self.implicit and iters > 0:
                first = self.val_graphs.batch(range(min(bs, len(self.val_graphs))), self.device)
                summary["jacobian_radius"] = float(self.model.jacobian_radius(first, iters=iters).mean())
        return summary

    def fit(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train from ``self.epoch`` to ``train.epochs`` (or only until epoch ``stop_after``, leaving a
        resumable run as an interrupted one would); returns the last metrics row and the best.
        The run's ``train.log`` is written while it trains and released after, so runs made one
        after another in a process each log to their own file only."""
        if self.info.is_main:
            add_log_file(self.run_dir / "train.log", rank=self.info.rank)
        try:
            return self._fit(stop_after)
        finally:
            if self.info.is_main:
                remove_log_file(self.run_dir / "train.log")

    def _fit(self, stop_after: int | None) -> dict[str, Any]:
        epochs = int(self.tcfg["epochs"])
        end = epochs if stop_after is None else min(int(stop_after), epochs)
        if self.info.is_main and self.epoch == 0:
            n_val = 0 if self.val_graphs is None else len(self.val_graphs)
            logger.info(f"training {self.cfg['model']['name']} ({sum(p.numel() for p in self.model.parameters())} "
                        f"parameters) on {len(self.train_graphs)} structures (val {n_val}), {self.steps_per_epoch} "
                        f"steps/epoch x {epochs} epochs, {self.info.world_size} process(es), {self.device}, "
                        f"units {self.units['energy']}")
        row: dict[str, Any] = self.history[-1] if self.history else {}
        start_rss = current_rss_mb()
        budget = self.tcfg["max_seconds"]
        stopped = None
        while self.epoch < end:
            if budget is not None and self.elapsed >= float(budget):
                stopped = "max_seconds"
                break
            epoch = self.epoch
            lr = self.schedule.current_lr()
            t0 = time.perf_counter()
            train = self.train_epoch(epoch)
            val = None
            t1 = time.perf_counter()
            last = epoch + 1 == epochs or (budget is not None and self.elapsed + t1 - t0 >= float(budget))
            if (epoch + 1) % int(self.tcfg["eval_every"] or 1) == 0 or last:
                val = self.validate()
            t2 = time.perf_counter()
            row = {"epoch": epoch + 1, "lr": lr, "seconds": t2 - t0, "train_loss": train["loss"],
                   "train_energy_mae": train["energy_mae"], "train_forces_mae": train["forces_mae"],
                   "train_solver_steps": train["solver_steps"], "train_bwd_steps": train["bwd_steps"],
                   "train_ms_per_step": train["ms_per_step"],
                   "val_energy_mae": None if val is None else val["energy_mae"],
                   "val_forces_mae": None if val is None else val["forces_mae"],
                   "val_solver_steps": None if val is None else val["mean_steps"],
                   "val_seconds": None if val is None else t2 - t1,
                   "val_jacobian_radius": None if val is None else val.get("jacobian_radius"), "stage": self.stage}
            self.elapsed += t2 - t0
            row["elapsed"] = self.elapsed
            row["peak_rss_mb"] = peak_rss_mb()
            self.history.append(row)
            self.epoch = epoch + 1
            score = self._score(row)
            improved = score is not None and math.isfinite(score) and score < float(self.best["value"])
            if improved:
                self.best = {**self.best, "epoch": self.epoch, "value": float(score), "stage": self.stage}
            state = self.state_dict()  # collective
            if self.info.is_main:
                save_checkpoint(state, self.run_dir / "last.pt")
                if improved:
                    save_checkpoint(state, self.run_dir / "best.pt")
                write_metrics_csv(self.run_dir / "metrics.csv", self.history)
                self.tb.epoch(row)
                logger.info(epoch_line(row, epochs, self.units["energy"]))
            barrier(self.info)
        self.tb.close()
        return {"run_dir": str(self.run_dir), "epochs": self.epoch, "units": dict(self.units), "last": row,
                "best": dict(self.best), "parameters": sum(p.numel() for p in self.model.parameters()),
                "seconds": self.elapsed, "stopped": stopped, "start_rss_mb": start_rss,
                "peak_rss_mb": peak_rss_mb()}
