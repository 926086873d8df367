"""Molecular dynamics with a DEQCalculator: velocity Verlet (NVE), Langevin (NVT) and
Berendsen NPT (needs a conservative model: the barostat reads the stress).

Every MD step is one row: step, time (fs), temperature (K), potential and total energy (eV),
the cell volume (A^3, periodic structures) and the solver cost of the force calls made during
the step (layer-block evaluations of the fixed-point and adjoint solves, final residual,
warm-started or not, wall time in ms). Row 0 is the initial structure, whose force call is the
cold solve.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from ..rundir import atomic_output
from .records import ForceCallLog, summarise_calls, write_csv
from .structures import periodic_volume, require_stress

ENSEMBLES = ("nve", "langevin", "npt")
MD_COLUMNS = ("step", "time_fs", "T_K", "E_pot_eV", "E_tot_eV", "volume_A3", "solver_steps", "adjoint_steps",
              "residual", "reused", "ms")


def init_velocities(atoms: Atoms, temperature_k: float, seed: int | None = 0) -> None:
    """Maxwell-Boltzmann velocities at ``temperature_k`` (K) from ``seed``, zero total momentum."""
    from ase.md import velocitydistribution as vd

    if temperature_k < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_k}")
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, float(temperature_k), rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=float(temperature_k), rng=rng)
    vd.Stationary(atoms)


def energy_drift(times_fs: np.ndarray, total_energy_ev: np.ndarray, natoms: int) -> float | None:
    """Slope of a least-squares line through total energy vs time, in eV/atom/ps (None for < 2 points)."""
    times_fs = np.asarray(times_fs, dtype=float)
    if len(times_fs) < 2 or np.ptp(times_fs) == 0:
        return None
    slope_ev_per_fs = np.polyfit(times_fs, np.asarray(total_energy_ev, dtype=float), 1)[0]
    return float(slope_ev_per_fs * 1000.0 / natoms)


@dataclass
class MDResult:
    """Rows of an MD run (see :data:`MD_COLUMNS`) and its settings."""

    rows: list[dict[str, Any]]
    ensemble: str
    fp_reuse: bool
    dt_fs: float
    natoms: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The ``dequiformer md`` JSON fields.

        ``mean_solver_steps``, ``ms_per_step`` (wall time of the force calls of one MD step,
        ms) and ``mean_temperature_k`` average MD steps 1..N (row 0, the initial cold solve,
        is ``first_step_solver_steps``); ``energy_drift_ev_per_atom_per_ps`` fits rows 0..N
        (NVE only, None otherwise); ``mean_adjoint_steps`` the adjoint solves' layer-block
        evaluations (conservative DEQ); ``final_volume_a3`` (periodic); ``unconverged_steps`` counts rows 0..N with an
        unconverged solve.
        """
        steps = self.rows[1:]
        def mean(key: str) -> float | None:
            return float(np.mean([r[key] for r in steps])) if steps else None
        drift = None
        if self.ensemble == "nve":
            drift = energy_drift(np.array([r["time_fs"] for r in self.rows]),
                                 np.array([r["E_tot_eV"] for r in self.rows]), self.natoms)
        return {
            "steps": len(steps),
            "ensemble": self.ensemble,
            "fp_reuse": self.fp_reuse,
            "mean_solver_steps": mean("solver_steps"),
            "mean_adjoint_steps": mean("adjoint_steps"),
            "first_step_solver_steps": int(self.rows[0]["solver_steps"]),
            "ms_per_step": mean("ms"),
            "energy_drift_ev_per_atom_per_ps": drift,
            "mean_temperature_k": mean("T_K") if steps else float(self.rows[0]["T_K"]),
            "final_volume_a3": self.rows[-1]["volume_A3"],
            "unconverged_steps": int(sum(not r["converged"] for r in self.rows)),
            "natoms": self.natoms,
            "dt_fs": self.dt_fs,
            **self.extra,
        }


def make_dynamics(atoms: Atoms, ensemble: str, dt_fs: float, temperature_k: float, friction_per_fs: float,
                  seed: int | None, pressure_bar: float = 1.01325, taut_fs: float = 100.0, taup_fs: float = 1000.0,
                  compressibility_per_bar: float = 4.57e-5):
    """ASE integrator: ``VelocityVerlet`` (nve), ``Langevin`` (langevin, friction in 1/fs) or
    ``NPTBerendsen`` (npt: isotropic Berendsen thermostat and barostat, ``taut``/``taup`` in fs,
    pressure in bar, compressibility in 1/bar; the structure must be 3D-periodic)."""
    if ensemble == "nve":
        from ase.md.verlet import VelocityVerlet

        return VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    if ensemble == "langevin":
        from ase.md.langevin import Langevin

        rng = np.random.default_rng(None if seed is None else seed + 1)
        return Langevin(atoms, timestep=dt_fs * units.fs, temperature_K=temperature_k,
                        friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    if ensemble == "npt":
        from ase.md.nptberendsen import NPTBerendsen

        require_stress(atoms, atoms.calc, "--ensemble npt")
        return NPTBerendsen(atoms, timestep=dt_fs * units.fs, temperature_K=temperature_k,
                            pressure_au=pressure_bar * units.bar, taut=taut_fs * units.fs, taup=taup_fs * units.fs,
                            compressibility_au=compressibility_per_bar / units.bar)
    raise ValueError(f"unknown ensemble {ensemble!r}; choose from {list(ENSEMBLES)}")


def run_md(
    atoms: Atoms,
    calc: Calculator,
    steps: int,
    dt_fs: float = 0.5,
    temperature_k: float = 300.0,
    ensemble: str = "nve",
    friction_per_fs: float = 0.01,
    seed: int | None = 0,
    init: bool = True,
    traj: str | Path | None = None,
    traj_interval: int = 1,
    log: str | Path | None = None,
    progress: bool = True,
    pressure_bar: float = 1.01325,
    taut_fs: float = 100.0,
    taup_fs: float = 1000.0,
    compressibility_per_bar: float = 4.57e-5,
) -> MDResult:
    """Run ``steps`` MD steps of ``atoms`` with ``calc``.

    Args:
        atoms: start structure (modified in place; constraints such as FixAtoms respected).
        calc: the calculator (a :class:`~dequiformer.calculator.DEQCalculator` gives solver stats).
        steps: number of MD steps N.
        dt_fs: time step (fs).
        temperature_k: initial Maxwell-Boltzmann temperature and Langevin target (K).
        ensemble: ``"nve"`` (velocity Verlet), ``"langevin"`` or ``"npt"`` (Berendsen).
        friction_per_fs: Langevin friction (1/fs).
        seed: seed of the initial velocities (and, plus one, of the Langevin noise).
        init: draw initial velocities; False keeps those ``atoms`` has.
        traj: ASE trajectory to write (every ``traj_interval`` steps), atomically.
        log: per-step CSV (:data:`MD_COLUMNS`), atomically.
        progress: tqdm progress bar on stderr.
        pressure_bar, taut_fs, taup_fs, compressibility_per_bar: NPT target pressure (bar),
            thermostat and barostat time constants (fs) and compressibility (1/bar).
    """
    from tqdm import tqdm

    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose from {list(ENSEMBLES)}")
    if steps < 0 or dt_fs <= 0 or traj_interval < 1:
        raise ValueError(f"need steps >= 0, dt > 0 fs and traj_interval >= 1 (got {steps}, {dt_fs}, {traj_interval})")
    if init:
        init_velocities(atoms, temperature_k, seed)
    atoms.calc = calc
    dyn = make_dynamics(atoms, ensemble, dt_fs, temperature_k, friction_per_fs, seed, pressure_bar, taut_fs, taup_fs,
                        compressibility_per_bar)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=steps, desc=f"MD ({ensemble})", unit="step", disable=not progress)
    with ForceCallLog(calc) as calls, contextlib.ExitStack() as stack:
        writer = None
        if traj is not None:
            from ase.io.trajectory import Trajectory

            writer = Trajectory(str(stack.enter_context(atomic_output(traj))), "w", atoms)

        def observe() -> None:
            step = len(rows)
            epot = float(atoms.get_potential_energy())
            row = {"step": step, "time_fs": step * dt_fs, "T_K": float(atoms.get_temperature()), "E_pot_eV": epot,
                   "E_tot_eV": epot + float(atoms.get_kinetic_energy()),
                   "volume_A3": periodic_volume(atoms),
                   **summarise_calls(calls.take())}
            rows.append(row)
            if writer is not None and step % traj_interval == 0:
                writer.write(atoms)
            if step:
                bar.update(1)
                bar.set_postfix(T=f"{row['T_K']:.0f}K", solver=row["solver_steps"])

        dyn.attach(observe, interval=1)
        try:
            dyn.run(steps=steps)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
    if log is not None:
        write_csv(log, rows, MD_COLUMNS)
    return MDResult(rows=rows, ensemble=ensemble, fp_reuse=bool(getattr(calc, "fp_reuse", False)), dt_fs=dt_fs,
                    natoms=len(atoms))

