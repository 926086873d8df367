"""Fixed-point prediction along trajectories: exact on polynomial paths, plain reuse after a
jump, reset when the atoms change; in the calculator it cuts solver steps of tight solves."""
import numpy as np
import pytest
import torch

from dequiformer import DEQCalculator
from dequiformer.deq.predictor import FixedPointPredictor, fixed_point_motion
from test_calculator import tiny_model


def _path(t: float, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates and a 'fixed point' that are polynomials of degree ``order - 1`` in t."""
    base = torch.arange(12, dtype=torch.float64).view(4, 3)
    coords = base + sum((t ** k) * (k + 1) * 0.1 * torch.ones(4, 3, dtype=torch.float64) for k in range(1, order))
    state = torch.sin(base) + sum((t ** k) * 0.3 * torch.cos(base * k) for k in range(1, order))
    return coords, state


@pytest.mark.parametrize("order", [2, 3])
def test_exact_on_polynomial_trajectories(order):
    pred = FixedPointPredictor(history=order)
    for t in range(order):
        coords, state = _path(float(t), order)
        pred.record(coords, z=state)
    coords, state = _path(float(order), order)
    guess = pred.predict(coords)
    assert pred.last_order == order
    assert torch.allclose(guess["z"], state, atol=1e-10)


def test_a_jump_falls_back_to_the_last_state():
    pred = FixedPointPredictor(history=3)
    for t in range(3):
        coords, state = _path(float(t), 2)
        pred.record(coords, z=state)
    jumped = coords + torch.randn(coords.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    guess = pred.predict(jumped)
    assert pred.last_order == 1 and torch.equal(guess["z"], state)  # exactly plain reuse
    assert pred.predict(coords)["z"].equal(state)  # standing still: the last state itself


def test_history_resets_on_other_shapes_and_bad_settings():
    pred = FixedPointPredictor(history=2)
    pred.record(torch.zeros(3, 3), z=torch.zeros(3, 4))
    pred.record(torch.ones(5, 3), z=torch.zeros(5, 4))
    assert len(pred) == 1
    assert pred.predict(torch.zeros(3, 3)) == {}
    with pytest.raises(ValueError, match="history must be one of"):
        FixedPointPredictor(history=5)


def test_calculator_prediction_cuts_steps_of_tight_solves_and_resets_on_new_atoms():
    from ase.build import molecule

    model = tiny_model()
    runs = {}
    for history in (1, 3):
        calc = DEQCalculator(model, dtype="float64", tol=1e-8, reuse_tol=1e-8, predictor=history)
        atoms = molecule("CH3OH")
        atoms.calc = calc
        velocity = 0.01 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
        base = atoms.positions.copy()
        steps, forces = [], []
        for k in range(8):
            atoms.positions = base + k * velocity + 0.5 * k * k * 0.1 * velocity
            forces.append(atoms.get_forces())
            steps.append(calc.stats["solver_steps"])
        runs[history] = (steps, forces, calc)
    assert sum(runs[3][0][3:]) < sum(runs[1][0][3:])
    assert np.allclose(runs[3][1][-1], runs[1][1][-1], atol=1e-6)
    calc = runs[3][2]
    assert calc.stats["predictor_order"] == 3
    # the diagnostics: extrapolation starts closer to the fixed point than it moved since the last
    # frame; plain reuse starts exactly at the last fixed point
    assert calc.stats["start_error"] < 0.5 * calc.stats["fixed_point_motion"]
    plain = runs[1][2].stats
    assert plain["start_error"] == pytest.approx(plain["fixed_point_motion"], rel=1e-9)
    water = molecule("H2O")
    water.calc = calc
    water.get_forces()
    assert calc.stats["reused"] is False and len(calc.predictor) == 1  # new atoms: history restarted


def test_history_dropped_on_other_labels_or_a_jump():
    pred = FixedPointPredictor(history=2, max_jump=1.0)
    coords, state = _path(0.0, 2)
    labels = torch.tensor([1, 6, 8, 1])
    pred.record(coords, labels=labels, z=state)
    assert pred.predict(coords + 0.1, labels=labels)["z"].equal(state)
    assert pred.predict(coords, labels=torch.tensor([1, 6, 7, 1])) == {} and len(pred) == 0  # other species
    pred.record(coords, labels=labels, z=state)
    moved = coords.clone()
    moved[2] += torch.tensor([0.0, 1.2, 0.0], dtype=torch.float64)  # one atom 1.2 > max_jump
    assert pred.predict(moved, labels=labels) == {} and len(pred) == 0
    with pytest.raises(ValueError, match="max_jump"):
        FixedPointPredictor(max_jump=0.0)


def test_fixed_point_motion_is_relative_to_the_solution():
    z = torch.tensor([3.0, 4.0])
    out = fixed_point_motion(z, torch.tensor([3.0, 3.0]), torch.tensor([0.0, 4.0]))
    assert out == pytest.approx({"start_error": 0.2, "fixed_point_motion": 0.6})
    assert fixed_point_motion(z, None, torch.zeros(3)) == {}  # cold solve; history of another shape
