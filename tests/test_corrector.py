"""ASPC warm starts (deq.corrector, ``correctors``): the corrector returns the damped iterate,
keeps the error of a moving fixed point bounded on a contractive map without any tolerance, and
in the calculator takes exactly its steps once two fixed points are known."""
import numpy as np
import pytest
import torch

from dequiformer import DEQCalculator
from dequiformer.deq.corrector import ASPC_MIXING, corrector_steps
from dequiformer.deq.predictor import FixedPointPredictor
from test_calculator import tiny_model


def test_corrector_returns_the_damped_iterate():
    target = torch.randn(6, 4, dtype=torch.float64)
    z0 = torch.zeros(6, 4, dtype=torch.float64)
    z, stats = corrector_steps(lambda z: target, z0, torch.tensor([0, 0, 0, 1, 1, 1]), 2, steps=1)
    assert torch.allclose(z, ASPC_MIXING * target)
    assert stats.steps.tolist() == [1, 1] and stats.converged.all() and stats.nfe == 1
    with pytest.raises(ValueError, match="corrector steps"):
        corrector_steps(lambda z: z, z0, steps=0)


def test_aspc_tracks_a_moving_fixed_point_of_a_contractive_map():
    """z* (t) of f_t(z) = A z + b(t), rho(A) = 0.6, b moving smoothly: two damped corrector steps per
    time step from the linear prediction stay within a small error of z*(t) for 200 steps, while
    one undamped step fed back as the history (no ASPC damping) does not."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(-0.6, 0.6, 8, dtype=torch.float64)) @ q.T
    direction = torch.randn(8, generator=gen, dtype=torch.float64)

    def b(t: float) -> torch.Tensor:
        return torch.sin(0.05 * t + direction)

    def exact(t: float) -> torch.Tensor:
        return torch.linalg.solve(torch.eye(8, dtype=torch.float64) - a, b(t))

    def track(steps: int, mixing: float) -> float:
        pred = FixedPointPredictor(history=2)
        worst = 0.0
        for t in range(200):
            coords = torch.full((1, 3), float(t), dtype=torch.float64)  # a straight path: order 2 passes
            guess = pred.predict(coords)
            if pred.last_order < 2:
                z = exact(t).view(1, 8)
            else:
                z, _ = corrector_steps(lambda v: (v @ a.T + b(t)), guess["z"], steps=steps, mixing=mixing)
                worst = max(worst, float((z.view(8) - exact(t)).norm() / exact(t).norm()))
            pred.record(coords, z=z)
        return worst

    assert track(2, ASPC_MIXING) < 5e-3
    assert track(1, 1.0) > 10 * track(2, ASPC_MIXING)


def test_calculator_takes_exactly_the_corrector_steps_after_two_fixed_points():
    from ase.build import molecule

    model = tiny_model()
    calc = DEQCalculator(model, dtype="float64", tol=1e-10, reuse_tol=1e-10, correctors=2)
    cold = DEQCalculator(model, dtype="float64", tol=1e-10, fp_reuse=False)
    atoms = molecule("CH3OH")
    velocity = 0.002 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
    base = atoms.positions.copy()
    corrected = []
    for k in range(6):
        atoms.positions = base + k * velocity
        forces = calc.get_forces(atoms)
        corrected.append((calc.stats["corrected"], calc.stats["solver_steps"]))
        reference = cold.get_forces(atoms)
    assert [c for c, _ in corrected] == [False, False, True, True, True, True]
    assert all(steps == 2 for c, steps in corrected if c)
    assert np.abs(forces - reference).max() < 1e-2 * np.abs(reference).max()
    with pytest.raises(ValueError, match="need predictor 2"):
        DEQCalculator(model, correctors=2, predictor=3)
