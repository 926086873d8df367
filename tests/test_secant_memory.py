"""Anderson with a secant memory carried between solves (deq.secant_memory, ``secant_memory``):
exact in one evaluation on a linear map whose secants span the space, fewer evaluations than a
plain warm start along a moving fixed point at equal accuracy, graphs independent, and in the
calculator fewer solver steps along a trajectory, dropped with the warm starts."""
import numpy as np
import pytest
import torch

from dequiformer import DEQCalculator
from dequiformer.deq.anderson import anderson
from dequiformer.deq.secant_memory import SecantMemory
from test_calculator import tiny_model


def _contraction(dim: int, radius: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(-radius, radius, dim, dtype=torch.float64)) @ q.T


def test_full_memory_solves_a_linear_map_after_one_evaluation():
    """With ``dim`` secant pairs of the same linear map, Anderson's least squares know (J - I)
    exactly: a solve from anywhere is accepted on its first evaluation, at the fixed point."""
    dim = 4
    a = _contraction(dim, 0.8, 0)
    b = torch.linspace(-1, 1, dim, dtype=torch.float64)

    def f(z):
        return z @ a.T + b

    exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b).view(1, dim)
    memory = SecantMemory(m=dim)
    anderson(f, torch.zeros(1, dim, dtype=torch.float64), tol=1e-12, max_iter=50, memory=memory, lam=0.0)
    assert len(memory) == dim
    z, stats = anderson(f, torch.ones(1, dim, dtype=torch.float64), tol=1e-8, max_iter=50, memory=memory, lam=0.0)
    assert stats.steps.tolist() == [1] and bool(stats.converged.all()) and stats.nfe == 1
    assert torch.allclose(z, exact, atol=1e-8)
    assert float(stats.residual[0]) < 1e-8  # the predicted residual is reported


def test_memory_tracks_a_moving_fixed_point_with_fewer_evaluations():
    """f_t(z) = A z + b(t) with rho(A) = 0.9 and b moving: warm starts from the last fixed point
    need far fewer evaluations with a carried memory than without, and stay within the tolerance's
    error bound of z*(t)."""
    dim = 12
    a = _contraction(dim, 0.9, 1)
    direction = torch.randn(dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def run(memory):
        z = torch.zeros(1, dim, dtype=torch.float64)
        evaluations, worst = [], 0.0
        for t in range(40):
            b = torch.sin(0.05 * t + direction)
            z, stats = anderson(lambda v: v @ a.T + b, z, tol=1e-4, max_iter=100, memory=memory)
            exact = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b)
            assert bool(stats.converged.all())
            if t >= 5:
                evaluations.append(int(stats.steps[0]))
                worst = max(worst, float((z.view(-1) - exact).norm() / exact.norm()))
        return float(np.mean(evaluations)), worst

    plain_steps, plain_error = run(None)
    carried_steps, carried_error = run(SecantMemory(m=5))
    assert carried_steps < 0.5 * plain_steps  # (about 1.8 against 12 here)
    # both within twice the error bound tol / (1 - rho) of an accepted iterate
    assert carried_error < 2e-3 and plain_error < 2e-3


def test_graphs_are_independent_problems():
    """Two graphs solved in one batch with one memory give what each gives alone with its own."""
    maps = [_contraction(3, 0.7, 3), _contraction(3, 0.5, 4)]
    rows = torch.tensor([0, 0, 1, 1, 1])

    def f_batch(z, shift):
        out = torch.empty_like(z)
        out[:2] = z[:2] @ maps[0].T + shift
        out[2:] = z[2:] @ maps[1].T - shift
        return out

    def f_single(g, shift):
        return lambda z: z @ maps[g].T + (shift if g == 0 else -shift)

    batch_memory, single = SecantMemory(3), [SecantMemory(3), SecantMemory(3)]
    z = torch.zeros(5, 3, dtype=torch.float64)
    alone = [torch.zeros(2, 3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)]
    for step in range(4):
        shift = 0.1 * step + 1.0
        z, stats = anderson(lambda v: f_batch(v, shift), z, rows, 2, tol=1e-6, max_iter=60, memory=batch_memory)
        for g in range(2):
            one_graph = torch.zeros(len(alone[g]), dtype=torch.long)
            alone[g], s = anderson(f_single(g, shift), alone[g], one_graph, 1, tol=1e-6, max_iter=60, memory=single[g])
            assert int(stats.steps[g]) == int(s.steps[0])
    assert torch.allclose(z, torch.cat(alone), atol=1e-10)


def test_memory_resets_on_another_shape():
    memory = SecantMemory(2)
    memory.push(torch.ones(3, 4), torch.ones(3, 4))
    memory.match(torch.zeros(3, 4))
    assert len(memory) == 1
    memory.match(torch.zeros(5, 4))
    assert len(memory) == 0
    with pytest.raises(ValueError, match="m must be >= 1"):
        SecantMemory(0)


def test_calculator_carries_the_memory_along_a_trajectory():
    """Along small steps the memory lowers the solver steps at a tight tolerance with forces within
    the tolerance of cold solves; other atoms drop it; it needs Anderson and a warm start."""
    from ase.build import molecule

    model = tiny_model()
    cold = DEQCalculator(model, dtype="float64", tol=1e-9, fp_reuse=False)
    atoms = molecule("CH3OH")
    velocity = 0.003 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
    base = atoms.positions.copy()

    def walk(calc):
        steps, worst = [], 0.0
        for k in range(12):
            atoms.positions = base + k * velocity
            forces = calc.get_forces(atoms)
            if k >= 3:
                steps.append(calc.stats["solver_steps"])
                reference = cold.get_forces(atoms)
                worst = max(worst, float(np.abs(forces - reference).max() / np.abs(reference).max()))
        return float(np.mean(steps)), worst

    with_memory = DEQCalculator(model, dtype="float64", reuse_tol=1e-6, predictor=2, secant_memory=4)
    without = DEQCalculator(model, dtype="float64", reuse_tol=1e-6, predictor=2, secant_memory=0)
    assert without.secant_memory is None and with_memory.secant_memory is not None
    memory_steps, memory_error = walk(with_memory)
    plain_steps, plain_error = walk(without)
    assert memory_steps < plain_steps
    assert memory_error < 1e-3 and plain_error < 1e-3
    assert len(with_memory.secant_memory) > 0
    with_memory.get_forces(molecule("H2O"))  # other atoms: cold solve, memory dropped
    assert len(with_memory.secant_memory) == 0 and not with_memory.stats["reused"]
    ctx, x = model.prepare(_graph(model, atoms))
    with pytest.raises(ValueError, match="secant memory"):
        model.trunk(x, ctx, secant_memory=SecantMemory(2))  # no warm start
    with pytest.raises(ValueError, match="secant_memory must be >= 0"):
        DEQCalculator(model, dtype="float64", secant_memory=-1)


def _graph(model, atoms):
    from dequiformer.data.graph import AtomicGraph

    return AtomicGraph.from_atoms(atoms, cutoff=model.cutoff, max_neighbors=model.max_neighbors, dtype=torch.float64)
