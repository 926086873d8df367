"""Where the time of one force call goes: ``dequiformer bench profile``.

For each checkpoint and system size (the structure itself, with its cell, for one copy; clusters
of copies of a molecule, as in ``bench md``, for more), a
``DEQCalculator`` with its default settings (DEQs reuse and extrapolate past fixed points) drives
NVE MD (velocity Verlet, ``dt_fs``, velocities drawn at ``temperature_k``): ``warmup`` steps, then
``calls`` steps under ``torch.profiler`` (one force call per step). The stages are the
:mod:`dequiformer.profiling` labels; derived ones:

* ``blocks``: the transformer-block evaluations inside the trunk (a conservative model's
  ``energy_gradient`` holds the layer evaluations of its adjoint solve);
* ``solver_overhead``: ``trunk - blocks`` (for a DEQ the solver's bookkeeping, the layer's input
  rescaling and the convergence checks; about zero for an explicit stack);
* ``other``: the profiled wall time of the call minus every outer stage (the calculator's Python,
  unit conversion, the warm-start predictor, ASE).

``ms_per_call`` is measured on ``calls`` more calls without the profiler (the profiler's own
overhead inflates the stage times a little; compare stage shares, not sums, against it).
Rows: ``atoms``, ``checkpoint``, ``kind`` (``deq`` | ``explicit``), ``ms_per_call``,
``profiled_ms_per_call``, ``solver_steps`` (layer-block evaluations per call), ``stages`` (ms per
call), ``top_ops`` (the ``top`` torch operators by self time: ``name``, ``ms``, ``count`` per call).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from ..device import synchronize
from ..profiling import PREFIX

__all__ = ["profile_force_calls", "run_profile_benchmark", "plot_profile"]

#: stages a call is split into in the report and the plot (outer ones sum to the call)
OUTER = ("graph", "edge_context", "embedding", "trunk", "heads", "energy_gradient")
SHOWN = ("graph", "edge_context", "embedding", "blocks", "solver_overhead", "heads", "energy_gradient", "other")


def _time_under(events: Any, name: str, ancestor: str) -> float:
    """ms spent in events called ``name`` that run inside an event called ``ancestor``."""
    total = 0.0
    for event in events:
        if event.name != name:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name != ancestor:
            parent = parent.cpu_parent
        if parent is not None:
            total += event.cpu_time_total / 1e3
    return total


def profile_force_calls(model: Any, atoms: Atoms, calls: int = 5, warmup: int = 3, dt_fs: float = 0.5,
                        temperature_k: float = 300.0, device: str = "cpu", dtype: str = "float32", top: int = 12,
                        seed: int = 0) -> dict[str, Any]:
    """Profile ``calls`` MD steps of ``model`` on ``atoms`` (module docstring); one row."""
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from torch.profiler import ProfilerActivity, profile

    from ..calculator import DEQCalculator
    from ..simulate.md import init_velocities

    if calls < 1 or warmup < 0:
        raise ValueError(f"need calls >= 1 and warmup >= 0 (got {calls}, {warmup})")
    calc = DEQCalculator(model, device=device, dtype=dtype)
    atoms = atoms.copy()
    atoms.calc = calc
    init_velocities(atoms, temperature_k, seed)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    steps: list[int] = []
    dyn.attach(lambda: steps.append(int(calc.stats["solver_steps"])), interval=1)

    def timed(n: int) -> float:
        start = time.perf_counter()
        dyn.run(n)
        synchronize(calc.device)
        return (time.perf_counter() - start) / n

    dyn.run(warmup)  # the first call (a cold solve) and the warm starts' history
    activities = [ProfilerActivity.CPU]
    if calc.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    first = len(steps)
    with profile(activities=activities) as prof:
        profiled = timed(calls)
    profiled_steps = steps[first:first + calls]
    plain = timed(calls)

    events = prof.key_averages()
    labelled = {e.key[len(PREFIX):]: e.cpu_time_total / 1e3 / calls for e in events if e.key.startswith(PREFIX)}
    stages = {name: labelled.get(name, 0.0) for name in OUTER}
    # blocks inside the trunk only: a conservative model's energy gradient evaluates the layer
    # too (its adjoint solve, the tracked evaluation), and that time stays in energy_gradient
    stages["blocks"] = _time_under(prof.events(), PREFIX + "block", PREFIX + "trunk") / calls
    stages["solver_overhead"] = max(stages["trunk"] - stages["blocks"], 0.0)
    stages["other"] = max(profiled * 1e3 - sum(stages[name] for name in OUTER), 0.0)
    ops = sorted((e for e in events if not e.key.startswith(PREFIX) and not e.key.startswith("ProfilerStep")),
                 key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return {
        "atoms": len(atoms), "kind": "deq" if calc.is_deq else "explicit", "ms_per_call": plain * 1e3,
        "profiled_ms_per_call": profiled * 1e3, "solver_steps": float(np.mean(profiled_steps)),
        "stages": {name: stages[name] for name in SHOWN},
        "top_ops": [{"name": e.key, "ms": e.self_cpu_time_total / 1e3 / calls, "count": e.count / calls} for e in ops],
    }


def run_profile_benchmark(checkpoints: dict[str, str], molecule: Atoms, copies: Sequence[int] = (1, 64),
                          calls: int = 5, warmup: int = 3, dt_fs: float = 0.5, device: str = "cpu",
                          dtype: str = "float32", threads: int | None = 1, top: int = 12,
                          progress: bool = True) -> dict[str, Any]:
    """Every (size, checkpoint) row, in this process, one after the other."""
    import torch
    from tqdm.auto import tqdm

    from ..train.checkpoint import load_model
    from .md_speed import molecule_grid

    if threads:
        torch.set_num_threads(int(threads))
    models = {label: load_model(path, device=device) for label, path in checkpoints.items()}
    rows = []
    jobs = [(k, label) for k in copies for label in models]
    for k, label in tqdm(jobs, desc="bench profile", unit="case", disable=not progress):
        atoms = molecule.copy() if k == 1 else molecule_grid(molecule, k)  # one copy: as given (cell, pbc)
        row = profile_force_calls(models[label], atoms, calls=calls, warmup=warmup,
                                  dt_fs=dt_fs, device=device, dtype=dtype, top=top)
        rows.append({"checkpoint": label, **row})
    return {"rows": rows, "calls": calls, "warmup": warmup, "dt_fs": dt_fs, "device": device,
            "dtype": dtype, "threads": threads, "units": {"ms_per_call": "ms", "stages": "ms per call",
                                                          "solver_steps": "layer-block evaluations per call"}}


def plot_profile(report: dict[str, Any], path: str | Path) -> Path:
    """One horizontal stacked bar per (size, checkpoint): ms per call by stage, a panel per size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    sizes = sorted({r["atoms"] for r in report["rows"]})
    fig, axes = plt.subplots(len(sizes), 1, figsize=(8, 1.2 + 1.0 * len(report["rows"])), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, n in zip(axes[:, 0], sizes):
        rows = [r for r in report["rows"] if r["atoms"] == n]
        for i, r in enumerate(rows):
            left = 0.0
            for j, name in enumerate(SHOWN):
                width = r["stages"][name]
                ax.barh(i, width, left=left, color=colors[j % len(colors)], label=name if i == 0 else None)
                left += width
        ax.set_yticks(range(len(rows)), [f"{r['checkpoint']} ({r['solver_steps']:.1f} steps)" for r in rows])
        ax.set_title(f"{n} atoms", fontsize=9)
        ax.set_xlabel("ms per force call (profiled)")
    axes[0, 0].legend(fontsize=7, ncol=4, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
