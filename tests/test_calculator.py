"""DEQCalculator under ASE dynamics and optimisers; units; warm-start bookkeeping."""
import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.md.langevin import Langevin
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from dequiformer import DEQCalculator
from dequiformer.models import build_model
from models_fixtures import TINY

DEQ = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}


def tiny_model(**extra):
    torch.manual_seed(0)
    m = build_model({**DEQ, **extra}, {"max_iter": 60})
    with torch.no_grad():
        for block in getattr(m, "blocks", []):
            block.attention.proj.weight.mul_(0.3)
            block.ffn.linear_2.weight.mul_(0.3)
    return m


def test_first_call_cold_then_reused_and_cheaper():
    calc = DEQCalculator(tiny_model(), dtype="float64")
    atoms = molecule("H2O")
    atoms.calc = calc
    atoms.get_forces()
    cold = dict(calc.stats)
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    warm = dict(calc.stats)
    assert cold["reused"] is False and warm["reused"] is True
    assert warm["solver_steps"] < cold["solver_steps"]
    assert warm["converged"] and cold["converged"]
    assert isinstance(warm["solver_steps"], int) and isinstance(warm["residual"], float)


def test_no_reuse_always_solves_cold():
    calc = DEQCalculator(tiny_model(), fp_reuse=False, dtype="float64")
    atoms = molecule("H2O")
    atoms.calc = calc
    steps = []
    for _ in range(2):
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
        steps.append(calc.stats["solver_steps"])
        assert calc.stats["reused"] is False
    assert steps[0] == steps[1] or abs(steps[0] - steps[1]) <= 2


def test_warm_start_reset_when_species_or_count_change():
    calc = DEQCalculator(tiny_model(), dtype="float64")
    water = molecule("H2O")
    water.calc = calc
    water.get_potential_energy()
    other = molecule("CH4")
    other.calc = calc
    other.get_potential_energy()
    assert calc.stats["reused"] is False
    swapped = molecule("H2O")
    swapped.numbers = swapped.numbers[[1, 0, 2]]  # same count, species moved
    swapped.calc = calc
    swapped.get_potential_energy()
    assert calc.stats["reused"] is False


def test_energy_and_forces_converted_to_ev():
    model_ev = tiny_model()
    model_kcal = tiny_model(energy_units="kcal/mol")
    atoms = molecule("CH3OH")
    e_ev = DEQCalculator(model_ev, dtype="float64").get_potential_energy(atoms)
    calc = DEQCalculator(model_kcal, dtype="float64")
    e_kcal = calc.get_potential_energy(atoms)
    f_kcal = calc.get_forces(atoms)
    f_ev = DEQCalculator(model_ev, dtype="float64").get_forces(atoms)
    factor = units.kcal / units.mol
    assert e_kcal == pytest.approx(e_ev * factor, rel=1e-6)
    assert np.allclose(f_kcal, f_ev * factor, rtol=1e-5, atol=1e-9)


def test_explicit_model_reports_blocks_as_steps():
    torch.manual_seed(0)
    calc = DEQCalculator(build_model({**TINY, "num_layers": 3}), dtype="float64")
    atoms = molecule("H2O")
    atoms.calc = calc
    atoms.get_forces()
    assert calc.stats["solver_steps"] == 3 and calc.stats["reused"] is False


@pytest.mark.parametrize("dynamics", ["verlet", "langevin", "bfgs"])
def test_runs_under_ase_dynamics(dynamics):
    atoms = molecule("CH3OH")
    atoms.calc = DEQCalculator(tiny_model(), dtype="float32")
    if dynamics == "verlet":
        dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    elif dynamics == "langevin":
        dyn = Langevin(atoms, timestep=0.5 * units.fs, temperature_K=300, friction=0.01, fixcm=False)
    else:
        dyn = BFGS(atoms, logfile=None)
    steps = []
    dyn.attach(lambda: steps.append(atoms.calc.stats["solver_steps"]))
    dyn.run(steps=4) if dynamics != "bfgs" else dyn.run(fmax=1e-8, steps=4)
    assert len(steps) >= 4
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.calc.stats["reused"] is True
