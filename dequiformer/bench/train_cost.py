"""Training cost per step: time, resident memory and allocated memory of configs side by side.

Each config trains for a few steps in a fresh process of its own (so its memory is its own),
with the same data and threads, no validation: first ``steps`` timed steps (after one warm-up
cycle), then one more cycle of steps during which the allocated bytes are sampled after every
torch operator (:class:`dequiformer.memory.AllocationPeak`; slow, so untimed). A cycle is the
repeating pattern of step kinds: with ``train.grad_force_every`` K the loss on ``-dE/dpos``
(a double backward) comes on every K-th step, and a DEQ's contractivity penalties on every
``deq.penalty_every``-th; the rows give time and peak per kind, since the peak is that of the
dearest kind. The solves are cold, as in a run's first epoch.

Rows: ``model, config, params, batch_size, steps, ms_per_step, ms_per_step_by_kind,
rss_growth_mb, peak_alloc_mb, peak_alloc_mb_by_kind`` plus ``*_vs_<reference>`` ratios.
``rss_growth_mb`` is the peak resident size above the process's size before the first step
(what a user sees, including the C allocator's fragmentation); ``peak_alloc_mb`` is the highest
allocated memory above a step's start (the CPU analogue of ``torch.cuda.max_memory_allocated``).
"""
from __future__ import annotations

import math
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

PLAIN, GRAD_FORCES, PENALTIES = "energy+forces", "+ -dE/dpos loss", "+ penalties"


def step_kind(grad_forces: bool, penalties: bool) -> str:
    """The label of a training step that computes these optional terms (``Trainer.step_terms``)."""
    return " ".join([PLAIN] + [GRAD_FORCES] * grad_forces + [PENALTIES] * penalties)


def _measure(config: str, name: str, data: str, overrides: Sequence[str], steps: int, threads: int,
             device: str, run_dir: str) -> dict[str, Any]:
    """One config's row (run in a child process)."""
    from ..config import load_config
    from ..device import synchronize
    from ..memory import AllocationPeak, current_rss_mb, peak_rss_mb
    from ..train.trainer import Trainer

    cfg = load_config(config, [f"data.path={data}", f"train.num_threads={threads}", f"train.device={device}",
                               "train.progress=false", "train.tensorboard=false", "train.epochs=1", *overrides])
    cfg["data"].update(n_val=0, n_test=0)
    trainer = Trainer(cfg, run_dir)
    # the step kinds repeat with the periods of the optional terms (Trainer.step_terms)
    cycle = math.lcm(int(trainer.tcfg["grad_force_every"]),
                     int(trainer.model.deq_cfg["penalty_every"]) if trainer.implicit else 1)
    timed = max(cycle, cycle * math.ceil(steps / cycle))
    total = cycle + timed + cycle  # warm-up, timed, sampled
    if len(trainer.train_graphs) < total * int(trainer.tcfg["batch_size"]):
        raise ValueError(f"{config}: {total} steps of {trainer.tcfg['batch_size']} frames need "
                         f"{total * int(trainer.tcfg['batch_size'])} training frames, the data gives "
                         f"{len(trainer.train_graphs)} (fewer --steps, or more data)")
    trainer.tcfg["max_steps_per_epoch"] = total
    times: dict[str, list[float]] = {}
    peaks: dict[str, float] = {}
    start_rss = current_rss_mb()
    rss_growth: list[float] = []
    inner = trainer._train_step

    def step(*args: Any, **kwargs: Any) -> Any:
        kind = step_kind(*trainer.step_terms(trainer.step))
        phase = 0 if trainer.step < cycle else (1 if trainer.step < cycle + timed else 2)
        if phase == 2:
            if not rss_growth:
                rss_growth.append(peak_rss_mb() - start_rss)
            with AllocationPeak(device) as peak:
                result = inner(*args, **kwargs)
            if peak.peak_mb is not None:
                peaks[kind] = max(peaks.get(kind, 0.0), peak.peak_mb)
            return result
        synchronize(trainer.device)
        t0 = time.perf_counter()
        result = inner(*args, **kwargs)
        synchronize(trainer.device)
        if phase == 1:
            times.setdefault(kind, []).append(1000.0 * (time.perf_counter() - t0))
        return result

    trainer._train_step = step  # type: ignore[method-assign]
    trainer.train_epoch(0)
    by_kind = {k: sum(v) / len(v) for k, v in times.items()}
    return {
        "model": name, "config": config,
        "params": sum(p.numel() for p in trainer.model.parameters()),
        "batch_size": int(trainer.tcfg["batch_size"]), "steps": timed,
        "ms_per_step": sum(sum(v) for v in times.values()) / timed,
        "ms_per_step_by_kind": by_kind,
        "rss_growth_mb": rss_growth[0] if rss_growth else None,
        "peak_alloc_mb": max(peaks.values()) if peaks else None,
        "peak_alloc_mb_by_kind": peaks,
    }


def run_train_cost_benchmark(configs: Sequence[str], data: str, out_dir: str | Path, overrides: Sequence[str] = (),
                             steps: int = 24, threads: int = 1, device: str = "cpu",
                             names: Sequence[str] | None = None, reference: str | None = None) -> dict[str, Any]:
    """Measure every config in turn, each in a fresh process; returns ``{"rows": [...]}`` with
    each row's time and memory also as ratios to the ``reference`` row (default: the last).

    Raises ValueError on a bad name or reference, and the child's error when a config fails."""
    from ..device import resolve_device

    resolve_device(device, what="--device")
    names = list(names or [Path(c).stem for c in configs])
    if len(set(names)) != len(names):
        raise ValueError(f"configs must have distinct names, got {names}")
    reference = reference or names[-1]
    if reference not in names:
        raise ValueError(f"reference {reference!r} is not one of the configs {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for config, name in zip(configs, names):
        with tempfile.TemporaryDirectory(dir=out) as run_dir, \
                ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows.append(pool.submit(_measure, config, name, data, list(overrides), int(steps), int(threads),
                                    device, run_dir).result())
    ref = rows[names.index(reference)]
    for row in rows:
        for key in ("ms_per_step", "rss_growth_mb", "peak_alloc_mb"):
            ok = row[key] is not None and ref[key]
            row[f"{key}_vs_{reference}"] = row[key] / ref[key] if ok else None
    return {"rows": rows, "reference": reference, "data": str(data), "overrides": list(overrides),
            "threads": int(threads), "device": device}


def plot_train_cost(report: dict[str, Any], path: str | Path) -> Path:
    """Bars per model: ms per step and peak allocated memory by step kind, resident growth (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    rows = report["rows"]
    models = [r["model"] for r in rows]
    kinds = sorted({k for r in rows for k in r["ms_per_step_by_kind"]}, key=len)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.8 / max(len(kinds), 1)
    for panel, key, title in ((0, "ms_per_step_by_kind", "ms per training step"),
                              (2, "peak_alloc_mb_by_kind", "peak allocated memory (MiB)")):
        for j, kind in enumerate(kinds):
            axes[panel].bar([i + j * width for i in range(len(rows))], [r[key].get(kind, 0.0) for r in rows],
                            width, label=kind)
        axes[panel].set_xticks([i + width * (len(kinds) - 1) / 2 for i in range(len(rows))], models)
        axes[panel].set_title(title)
        axes[panel].legend(fontsize=7)
    axes[1].bar(models, [r["rss_growth_mb"] or 0.0 for r in rows], color="gray")
    axes[1].set_title("resident memory growth (MiB)")
    fig.suptitle(f"training cost per step ({report['threads']} thread(s), {report['device']})")
    fig.tight_layout()
    return save_figure(fig, path)
