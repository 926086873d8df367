"""NVE energy conservation: total-energy drift and fluctuation for each way of computing forces.

A force field whose forces are the exact gradient of its energy conserves the total energy in
velocity-Verlet MD up to the integrator's O(dt^2) fluctuation; direct (non-gradient) forces
do not, and the total energy walks away. For a DEQ, forces also depend on how well the fixed
point (and, for conservative forces, the adjoint) is solved, and reusing the previous step's
fixed point with a loose tolerance breaks time reversibility, so the drift depends on
``reuse_tol``. Every case starts from the same structure with the same initial velocities.

Rows: ``model`` (label), ``forces`` (direct | conservative), ``solve`` (cold | reuse | explicit),
``reuse_tol``, ``steps``, ``ps``, ``drift_ev_per_atom_per_ps`` (least-squares slope of the total
energy), ``fluctuation_ev_per_atom`` (standard deviation of the total energy about that line),
``max_deviation_ev_per_atom`` (largest |E_tot(t) - E_tot(0)|), ``mean_solver_steps``,
``mean_adjoint_steps`` (layer-block evaluations per MD step), ``ms_per_step``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase import Atoms

from ..calculator import DEQCalculator
from ..simulate.md import run_md


def nve_cases(models: dict[str, torch.nn.Module], reuse_tols: Sequence[float],
              modes: Sequence[str] | None = None, cold: bool = True) -> list[dict[str, Any]]:
    """The cases to run: per model (and per force mode, default the model's own), a cold solve
    (unless ``cold`` is False) and a reuse run per tolerance for a DEQ, one run for an explicit
    model."""
    cases = []
    for label, model in models.items():
        own = "conservative" if getattr(model, "conservative", False) else "direct"
        for mode in (modes or [own]):
            if model.is_implicit:
                if cold:
                    cases.append({"model": label, "forces": mode, "solve": "cold", "reuse_tol": None})
                cases += [{"model": label, "forces": mode, "solve": "reuse", "reuse_tol": float(t)} for t in reuse_tols]
            else:
                cases.append({"model": label, "forces": mode, "solve": "explicit", "reuse_tol": None})
    return cases


def with_force_mode(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``model`` itself when it already computes forces ``mode``'s way, else a copy that does
    (same weights; a direct model's energy gradient, or a conservative model's direct head)."""
    if mode not in ("direct", "conservative"):
        raise ValueError(f"force mode must be 'direct' or 'conservative', got {mode!r}")
    if model.hparams["forces"] == mode:
        return model
    other = copy.deepcopy(model)
    other.hparams["forces"] = mode
    return other


def run_case(model: torch.nn.Module, case: dict[str, Any], atoms: Atoms, steps: int, dt_fs: float,
             temperature_k: float, seed: int, tol: float, dtype: str, progress: bool = False,
             adjoint_tol: float | None = None, device: str | torch.device = "cpu") -> dict[str, Any]:
    """One NVE run; returns the row and the per-step total energies (eV/atom, relative to step 0)."""
    calc = DEQCalculator(with_force_mode(model, case["forces"]), fp_reuse=case["solve"] == "reuse", tol=tol,
                         reuse_tol=case["reuse_tol"] if case["reuse_tol"] is not None else tol, dtype=dtype,
                         adjoint_tol=adjoint_tol, device=device)
    result = run_md(atoms.copy(), calc, steps=steps, dt_fs=dt_fs, temperature_k=temperature_k, ensemble="nve",
                    seed=seed, progress=progress)
    summary = result.summary()
    n = len(atoms)
    t_ps = np.array([r["time_fs"] for r in result.rows]) / 1000.0
    e = np.array([r["E_tot_eV"] for r in result.rows]) / n
    de = e - e[0]
    fit = np.polyval(np.polyfit(t_ps, de, 1), t_ps) if len(t_ps) > 1 else de
    row = {
        **case,
        "steps": steps, "dt_fs": dt_fs, "ps": steps * dt_fs / 1000.0,
        "drift_ev_per_atom_per_ps": summary["energy_drift_ev_per_atom_per_ps"],
        "fluctuation_ev_per_atom": float(np.std(de - fit)),
        "max_deviation_ev_per_atom": float(np.abs(de).max()),
        "mean_solver_steps": summary["mean_solver_steps"],
        "mean_adjoint_steps": summary["mean_adjoint_steps"],
        "ms_per_step": summary["ms_per_step"],
        "mean_temperature_k": summary["mean_temperature_k"],
        "unconverged_steps": summary["unconverged_steps"],
    }
    return {"row": row, "time_ps": t_ps.tolist(), "energy_ev_per_atom": de.tolist()}


def run_nve_benchmark(models: dict[str, torch.nn.Module], atoms: Atoms, steps: int = 4000, dt_fs: float = 0.5,
                      temperature_k: float = 300.0, seed: int = 0, tol: float = 1e-4,
                      reuse_tols: Sequence[float] = (1e-1, 1e-2, 1e-3), modes: Sequence[str] | None = None,
                      dtype: str = "float32", progress: bool = True, adjoint_tol: float | None = None,
                      cold: bool = True, device: str | torch.device = "cpu") -> dict[str, Any]:
    """All cases of :func:`nve_cases` on ``atoms``; returns ``{"rows", "traces", settings}``."""
    from tqdm.auto import tqdm

    cases = nve_cases(models, reuse_tols, modes, cold)
    rows, traces = [], []
    for case in tqdm(cases, desc="bench nve", unit="run", disable=not progress):
        out = run_case(models[case["model"]], case, atoms, steps, dt_fs, temperature_k, seed, tol, dtype,
                       adjoint_tol=adjoint_tol, device=device)
        rows.append(out["row"])
        traces.append({k: out[k] for k in ("time_ps", "energy_ev_per_atom")})
    return {"rows": rows, "traces": traces, "natoms": len(atoms), "temperature_k": temperature_k, "seed": seed,
            "tol": tol, "adjoint_tol": adjoint_tol, "dtype": dtype, "device": str(device),
            "units": {"drift": "eV/atom/ps", "fluctuation": "eV/atom", "steps": "layer-block evaluations per MD step"}}


def case_label(row: dict[str, Any]) -> str:
    tail = f" reuse {row['reuse_tol']:g}" if row["solve"] == "reuse" else f" {row['solve']}"
    return f"{row['model']} {row['forces']}{tail}"


def plot_nve(report: dict[str, Any], path: str | Path) -> Path:
    """Total energy per atom against time, relative to the start, one line per case (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import save_figure

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row, trace in zip(report["rows"], report["traces"]):
        style = "-" if row["forces"] == "conservative" else "--"
        ax.plot(trace["time_ps"], trace["energy_ev_per_atom"], style, lw=1, label=case_label(row))
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("E_tot(t) - E_tot(0) (eV/atom)")
    ax.set_title("NVE energy conservation (dashed: direct forces)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
