"""Geometry optimisation with a DEQCalculator: ASE's BFGS, LBFGS and FIRE.

Every optimiser step is one row: step, potential energy (eV), fmax (eV/A, on the atoms
free to move) and the solver cost of the step's force calls. Row 0 is the start structure
(the cold solve).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..rundir import atomic_output
from .records import ForceCallLog, summarise_calls, write_csv
from .structures import periodic_volume, require_stress

OPTIMIZERS = ("bfgs", "lbfgs", "fire")
RELAX_COLUMNS = ("step", "elapsed_s", "E_pot_eV", "fmax_eV_per_A", "volume_A3", "solver_steps", "adjoint_steps", "residual",
                 "reused", "ms")


def make_optimizer(atoms: Any, name: str, maxstep: float | None = None):
    """ASE optimiser ``bfgs`` | ``lbfgs`` | ``fire`` on ``atoms`` (or a cell filter) without a log
    file (maxstep in A)."""
    from ase.optimize import BFGS, FIRE, LBFGS

    classes = {"bfgs": BFGS, "lbfgs": LBFGS, "fire": FIRE}
    key = str(name).lower()
    if key not in classes:
        raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}")
    kwargs = {} if maxstep is None else {"maxstep": maxstep}
    return classes[key](atoms, logfile=None, **kwargs)


def max_force(atoms: Atoms) -> float:
    """Largest force norm on the atoms free to move (constraints applied), eV/A."""
    forces = atoms.get_forces()
    return float(np.sqrt((forces ** 2).sum(axis=1)).max()) if len(forces) else 0.0


@dataclass
class RelaxResult:
    """Rows of one relaxation (see :data:`RELAX_COLUMNS`) and its outcome."""

    rows: list[dict[str, Any]]
    converged: bool
    seconds: float
    optimizer: str
    fmax: float
    #: [N, 3] forces on the start structure without constraints applied (eV/A).
    initial_forces: np.ndarray | None = None

    @property
    def final_fmax(self) -> float:
        """fmax of the last structure (eV/A)."""
        return float(self.rows[-1]["fmax_eV_per_A"])

    @property
    def solver_steps(self) -> list[int]:
        """Solver steps of each row (the start structure's cold solve first)."""
        return [int(r["solver_steps"]) for r in self.rows]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: steps, convergence, energies (eV), fmax (eV/A), solver cost."""
        steps = self.solver_steps
        return {
            "optimizer": self.optimizer,
            "fmax": self.fmax,
            "steps": len(self.rows) - 1,
            "converged": self.converged,
            "initial_energy_ev": float(self.rows[0]["E_pot_eV"]),
            "final_energy_ev": float(self.rows[-1]["E_pot_eV"]),
            "final_fmax_ev_per_a": self.final_fmax,
            "first_step_solver_steps": steps[0],
            "mean_solver_steps": float(np.mean(steps[1:])) if len(steps) > 1 else None,
            "unconverged_solves": int(sum(not r["converged"] for r in self.rows)),
            "seconds": self.seconds,
        }


def run_relaxation(
    atoms: Atoms,
    calc: Calculator,
    optimizer: str = "lbfgs",
    fmax: float = 0.05,
    steps: int = 100,
    maxstep: float | None = None,
    traj: str | Path | None = None,
    log: str | Path | None = None,
    progress: bool = False,
    cell: bool = False,
    force_scaled_tol: tuple[float, float] | None = None,
) -> RelaxResult:
    """Relax ``atoms`` (in place) with ``calc`` until fmax <= ``fmax`` (eV/A) or ``steps`` steps.

    Args:
        atoms: start structure (FixAtoms and other ASE constraints respected).
        calc: the calculator.
        optimizer: ``bfgs``, ``lbfgs`` or ``fire``.
        fmax: force convergence threshold (eV/A).
        steps: maximum optimiser steps.
        maxstep: largest atomic displacement per step (A); the optimiser's default when None.
        traj: ASE trajectory of every step, written atomically.
        log: per-step CSV (:data:`RELAX_COLUMNS`), written atomically.
        progress: tqdm progress bar over the steps (stderr).
        cell: relax the cell too (ASE's ``FrechetCellFilter``; needs a conservative model, whose
            stress drives the lattice, and a 3D-periodic structure). ``fmax`` then applies to the
            filter's generalised forces (atomic forces and the virial per atom).
        force_scaled_tol: ``(floor, cap)``: a DEQ calculator's warm-start tolerance follows the
            forces, ``reuse_tol = clip(floor * fmax_now / fmax, floor, cap)`` after every step.
            The error of a solve to relative residual ``r`` is about ``r`` times the forces, so
            far from the minimum a loose solve moves the atoms as well as a tight one, and the
            tolerance tightens to ``floor`` as fmax falls to the target (an inexact gradient
            whose error shrinks with the gradient). Ignored for a calculator without
            ``reuse_tol`` (explicit models).
    """
    from tqdm import tqdm

    if steps < 0 or fmax <= 0:
        raise ValueError(f"need steps >= 0 and fmax > 0 eV/A (got {steps}, {fmax})")
    if force_scaled_tol is not None:
        floor, cap = (float(v) for v in force_scaled_tol)
        if not 0 < floor <= cap:
            raise ValueError(f"force_scaled_tol needs 0 < floor <= cap, got {tuple(force_scaled_tol)}")
    scale_tol = force_scaled_tol is not None and getattr(calc, "fp_reuse", False)
    atoms.calc = calc
    target: Any = atoms
    if cell:
        from ase.filters import FrechetCellFilter

        require_stress(atoms, calc, "a cell relaxation")
        target = FrechetCellFilter(atoms)
    opt = make_optimizer(target, optimizer, maxstep)
    rows: list[dict[str, Any]] = []
    initial: dict[str, np.ndarray] = {}
    bar = tqdm(total=steps, desc=f"relax ({optimizer})", unit="step", disable=not progress)
    start = time.perf_counter()
    with ForceCallLog(calc) as calls, contextlib.ExitStack() as stack:
        writer = None
        if traj is not None:
            from ase.io.trajectory import Trajectory

            writer = Trajectory(str(stack.enter_context(atomic_output(traj))), "w", atoms)

        def observe() -> None:
            row = {"step": len(rows), "elapsed_s": time.perf_counter() - start,
                   "E_pot_eV": float(atoms.get_potential_energy()),
                   "fmax_eV_per_A": max_force(atoms),
                   "volume_A3": periodic_volume(atoms),
                   **summarise_calls(calls.take())}
            rows.append(row)
            if scale_tol:  # the next step's solves: looser while the forces are large
                calc.reuse_tol = min(cap, max(floor, floor * row["fmax_eV_per_A"] / fmax))
            if not initial:
                initial["forces"] = np.array(atoms.get_forces(apply_constraint=False), dtype=float)
            if writer is not None:
                writer.write(atoms)
            if row["step"]:
                bar.update(1)
                bar.set_postfix(fmax=f"{row['fmax_eV_per_A']:.3f}", solver=row["solver_steps"])

        opt.attach(observe, interval=1)
        try:
            converged = bool(opt.run(fmax=fmax, steps=steps))
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        if not rows:  # an optimiser that did not call its observers on the start structure
            observe()
    seconds = time.perf_counter() - start
    if log is not None:
        write_csv(log, rows, RELAX_COLUMNS)
    return RelaxResult(rows=rows, converged=converged, seconds=seconds, optimizer=str(optimizer).lower(),
                       fmax=float(fmax), initial_forces=initial.get("forces"))

