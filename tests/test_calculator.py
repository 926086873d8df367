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


def _cold_then_warm(calc: DEQCalculator, atoms, shift: float) -> tuple[dict, dict]:
    """``calc.stats`` of a first call on ``atoms`` and of a second after moving atom 0 by ``shift`` A."""
    atoms.calc = calc
    atoms.get_forces()
    cold = dict(calc.stats)
    atoms.positions[0, 0] += shift
    atoms.get_forces()
    return cold, dict(calc.stats)


def test_first_call_cold_then_reused_and_cheaper():
    cold, warm = _cold_then_warm(DEQCalculator(tiny_model(), dtype="float64"), molecule("H2O"), 0.01)
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


def _crystal():
    from ase.build import bulk

    atoms = bulk("NaCl", "rocksalt", a=4.6).repeat((1, 1, 2))
    atoms.rattle(0.05, seed=0)
    return atoms


def test_conservative_calculator_gives_voigt_stress_in_ev_per_a3():
    from ase.calculators.fd import calculate_numerical_stress

    calc = DEQCalculator(tiny_model(forces="conservative"), dtype="float64", tol=1e-10, fp_reuse=False)
    assert "stress" in calc.implemented_properties
    atoms = _crystal()
    atoms.calc = calc
    stress = atoms.get_stress()
    assert stress.shape == (6,)
    assert calc.stats["adjoint_steps"] > 0 and calc.stats["adjoint_converged"]
    # ASE's own check: the stress is the strain derivative of the energy per volume
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.allclose(stress, numeric, rtol=1e-4, atol=1e-8)


def test_stress_is_a_clear_error_for_direct_models_and_molecules():
    from ase.calculators.calculator import PropertyNotImplementedError

    direct = DEQCalculator(tiny_model(), dtype="float64")
    assert "stress" not in direct.implemented_properties
    atoms = _crystal()
    atoms.calc = direct
    with pytest.raises(PropertyNotImplementedError, match="conservative model"):
        atoms.get_stress()
    h2o = molecule("H2O")
    h2o.calc = DEQCalculator(tiny_model(forces="conservative"), dtype="float64")
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three"):
        h2o.get_stress()


def test_conservative_reuse_warm_starts_the_adjoint():
    calc = DEQCalculator(tiny_model(forces="conservative"), dtype="float64")
    cold, warm = _cold_then_warm(calc, molecule("CH3OH"), 0.005)
    assert warm["reused"] and warm["adjoint_steps"] < cold["adjoint_steps"]


def test_cell_relaxation_with_frechet_cell_filter_and_npt_md():
    from dequiformer.simulate.md import run_md
    from dequiformer.simulate.relax import run_relaxation

    model = tiny_model(forces="conservative")
    atoms = _crystal()
    v0 = atoms.get_volume()
    result = run_relaxation(atoms, DEQCalculator(model, dtype="float64"), optimizer="fire", fmax=1e-4, steps=20,
                            cell=True)
    assert result.rows[-1]["volume_A3"] != pytest.approx(v0, rel=1e-6)  # the lattice moved
    assert result.rows[-1]["adjoint_steps"] > 0
    with pytest.raises(ValueError, match="needs the stress"):
        run_relaxation(_crystal(), DEQCalculator(tiny_model(), dtype="float64"), cell=True)
    md = run_md(_crystal(), DEQCalculator(model, dtype="float64"), steps=5, ensemble="npt", temperature_k=300,
                progress=False, taup_fs=50.0)
    summary = md.summary()
    assert summary["ensemble"] == "npt" and summary["final_volume_a3"] is not None
    assert summary["mean_adjoint_steps"] > 0


@pytest.mark.slow
def test_conservative_nve_conserves_energy():
    """Exact gradients: the total-energy drift is set by the Verlet error and the solver
    tolerances alone. With tight solves (1e-8) and a 0.25 fs step the energy of a random
    tiny model drifts by far less than a direct-force model's (~1e-2 eV/atom/ps on the demo)."""
    from dequiformer.simulate.md import run_md

    atoms = molecule("CH3OH")
    calc = DEQCalculator(tiny_model(forces="conservative"), dtype="float64", tol=1e-8, reuse_tol=1e-8)
    calc.model.deq_cfg["b_tol"] = 1e-8
    result = run_md(atoms, calc, steps=200, dt_fs=0.25, temperature_k=300, progress=False)
    assert abs(result.summary()["energy_drift_ev_per_atom_per_ps"]) < 1e-5


def test_unconverged_solves_warn_once_and_are_counted():
    calc = DEQCalculator(tiny_model(), dtype="float64", tol=1e-12, max_iter=2, fp_reuse=False)
    atoms = molecule("H2O")
    atoms.calc = calc
    with pytest.warns(RuntimeWarning, match="unconverged"):
        atoms.get_forces()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()
    assert calc.stats["solver_steps"] == 2 and calc.stats["unconverged_calls"] == 2
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        DEQCalculator(tiny_model(), max_iter=0)
