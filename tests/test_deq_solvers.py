"""Per-graph fixed-point solvers and implicit gradients on small contractive maps."""
from __future__ import annotations

import pytest
import torch

from dequiformer.deq import (
    SolverStats,
    anderson,
    broyden,
    fixed_point_with_grad,
    forward_iteration,
    get_solver,
)
from dequiformer.deq.anderson import anderson_weights
from dequiformer.deq.graph_ops import graph_norm, graph_sum, rows

SOLVERS = {"anderson": anderson, "broyden": broyden, "forward": forward_iteration}
SIZES = (3, 5, 2, 7)
D = 6


class GraphMap:
    """``f(z) = tanh(z W^T + mean_graph(z) V^T + x U^T)``: contractive (Lipschitz <= rho + rho_v).

    The per-graph mean couples the rows of a graph (like message passing) and nothing
    couples different graphs.
    """

    def __init__(self, sizes=SIZES, rho=0.8, rho_v=0.1, x_scale=0.5, dtype=torch.float64, seed=0):
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=dtype))
        self.W = q @ torch.diag(torch.linspace(0.2, 1.0, D, dtype=dtype) * rho) @ q.T
        v = torch.randn(D, D, generator=gen, dtype=dtype)
        self.V = v / torch.linalg.matrix_norm(v, 2) * rho_v
        self.U = torch.randn(D, D, generator=gen, dtype=dtype) * 0.5
        self.sizes = tuple(sizes)
        self.graph_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
        self.x = torch.randn(len(self.graph_index), D, generator=gen, dtype=dtype) * x_scale
        self.dtype = dtype

    @property
    def num_graphs(self) -> int:
        return len(self.sizes)

    def z0(self) -> torch.Tensor:
        return torch.zeros(len(self.graph_index), D, dtype=self.dtype)

    def __call__(self, z, W=None, U=None, x=None):
        W = self.W if W is None else W
        U = self.U if U is None else U
        x = self.x if x is None else x
        gi, nb = self.graph_index, self.num_graphs
        counts = torch.tensor(self.sizes, dtype=z.dtype).unsqueeze(1)
        mean = rows(graph_sum(z, gi, nb) / counts, gi)
        return torch.tanh(z @ W.T + mean @ self.V.T + x @ U.T)

    def only(self, g: int) -> "GraphMap":
        """The same map restricted to graph ``g`` (solved alone)."""
        sub = GraphMap.__new__(GraphMap)
        sub.W, sub.V, sub.U, sub.dtype = self.W, self.V, self.U, self.dtype
        sub.sizes = (self.sizes[g],)
        sub.graph_index = torch.zeros(self.sizes[g], dtype=torch.long)
        sub.x = self.x[self.graph_index == g]
        return sub


def relative_residual(f, z, gi, nb):
    fz = f(z)
    return graph_norm(fz - z, gi, nb) / graph_norm(fz, gi, nb)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_solvers_converge_per_graph(name, dtype):
    f = GraphMap(dtype=dtype)
    z, stats = SOLVERS[name](f, f.z0(), f.graph_index, tol=1e-4, max_iter=100, trace=True)
    assert isinstance(stats, SolverStats)
    assert z.shape == f.z0().shape and z.dtype == dtype
    assert stats.converged.all() and (stats.residual < 1e-4).all()
    assert stats.steps.shape == (f.num_graphs,) and stats.steps.dtype == torch.long
    assert int(stats.steps.max()) == stats.nfe and len(stats.trace) == stats.nfe
    # the returned value is f(accepted iterate): one more contraction, residual below tol
    assert (relative_residual(f, z, f.graph_index, f.num_graphs) < 1e-4).all()
    summary = stats.as_dict()
    assert summary["unconverged"] == 0 and summary["nfe"] == stats.nfe
    assert summary["max_steps"] == stats.nfe and len(summary["steps"]) == f.num_graphs


def test_get_solver():
    assert get_solver("anderson") is anderson
    assert get_solver("broyden") is broyden
    assert get_solver("forward") is forward_iteration
    with pytest.raises(ValueError, match="anderson.*broyden.*forward"):
        get_solver("newton")


def test_anderson_needs_far_fewer_evaluations_than_forward():
    f = GraphMap(rho=0.97, rho_v=0.02, x_scale=0.1)  # slowly contracting
    _, st_and = anderson(f, f.z0(), f.graph_index, tol=1e-4, max_iter=500)
    _, st_fwd = forward_iteration(f, f.z0(), f.graph_index, tol=1e-4, max_iter=500)
    assert st_and.converged.all() and st_fwd.converged.all()
    assert st_and.nfe <= st_fwd.nfe // 2, (st_and.nfe, st_fwd.nfe)
    assert (st_and.steps <= st_fwd.steps).all()


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_graph_result_does_not_depend_on_batch_mates(name):
    f = GraphMap()
    z_batch, st_batch = SOLVERS[name](f, f.z0(), f.graph_index, tol=1e-10, max_iter=200)
    for g in range(f.num_graphs):
        sub = f.only(g)
        z_alone, st_alone = SOLVERS[name](sub, sub.z0(), sub.graph_index, tol=1e-10, max_iter=200)
        torch.testing.assert_close(z_alone, z_batch[f.graph_index == g], rtol=0, atol=1e-6)
        assert int(st_alone.steps[0]) == int(st_batch.steps[g])


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_warm_start_from_fixed_point_converges_at_once(name):
    f = GraphMap()
    z_star, _ = SOLVERS[name](f, f.z0(), f.graph_index, tol=1e-4, max_iter=100)
    _, stats = SOLVERS[name](f, z_star, f.graph_index, tol=1e-4, max_iter=100)
    assert stats.converged.all() and stats.nfe <= 2


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_converged_graph_stops_changing(name):
    f = GraphMap(sizes=(2, 6, 4), seed=1)
    # graph 0 contracts much faster: its rows see a scaled-down map
    fast = (f.graph_index == 0).unsqueeze(1).to(f.dtype)
    inputs = []

    def recorded(z):
        inputs.append(z.clone())
        return f(z) * (1 - 0.9 * fast)

    z, stats = SOLVERS[name](recorded, f.z0(), f.graph_index, tol=1e-8, max_iter=200, trace=True)
    assert stats.converged.all()
    first = int(stats.steps[0])
    assert first + 2 <= stats.nfe, "test needs graph 0 to finish well before the others"
    rows0 = f.graph_index == 0
    later = [zin[rows0] for zin in inputs[first:]]
    for zin in later:
        assert torch.equal(zin, z[rows0])
    assert all(torch.equal(t[0], stats.trace[first - 1][0]) for t in stats.trace[first:])


def test_states_are_intermediate_iterates():
    f = GraphMap()
    z, stats = anderson(f, f.z0(), f.graph_index, tol=1e-8, max_iter=100, n_states=3)
    assert len(stats.states) == 3
    assert all(s.shape == z.shape and not s.requires_grad for s in stats.states)
    errors = [float((s - z).norm()) for s in stats.states]
    assert errors[0] > errors[-1] > 0


def test_anderson_weights_survive_singular_systems():
    b, m = 3, 4
    gram = torch.zeros(b, m, m, dtype=torch.float64)
    gram[1] = 2.0  # identical residual columns: rank one
    gram[2] = float("inf")
    valid = torch.ones(b, m, dtype=torch.bool)
    for lam in (0.0, 1e-4):
        alpha, restarted = anderson_weights(gram, valid, newest=2, lam=lam)
        assert torch.isfinite(alpha).all()
        torch.testing.assert_close(alpha.sum(1), torch.ones(b, dtype=torch.float64))
        assert restarted[0] and restarted[2]  # zero / non-finite Gram: restart the window
        assert torch.equal(alpha[0], torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("lam", [0.0, 1e-4])
def test_anderson_survives_singular_history(lam):
    # f(z) = z + 1 has no fixed point and every residual column is the same vector
    z0 = torch.zeros(5, 3, dtype=torch.float64)
    gi = torch.tensor([0, 0, 1, 1, 1])
    z, stats = anderson(lambda z: z + 1.0, z0, gi, tol=1e-6, max_iter=15, m=4, lam=lam)
    assert torch.isfinite(z).all() and torch.isfinite(stats.residual).all()
    assert not stats.converged.any() and stats.nfe == 15
    # constant f: the exact fixed point after one step, no NaN from the zero residual
    c = torch.randn(5, 3, dtype=torch.float64)
    z, stats = anderson(lambda z: c.clone(), z0, gi, tol=1e-6, max_iter=15, m=4, lam=lam)
    assert stats.converged.all() and torch.equal(z, c)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_nonfinite_f_flags_the_graph_and_returns_finite_values(name):
    f = GraphMap()
    calls = [0]
    bad_rows = (f.graph_index == 1).unsqueeze(1)

    def poisoned(z):
        calls[0] += 1
        out = f(z)
        return torch.where(bad_rows, torch.full_like(out, float("nan")), out) if calls[0] >= 3 else out

    z, stats = SOLVERS[name](poisoned, f.z0(), f.graph_index, tol=1e-6, max_iter=100)
    assert torch.isfinite(z).all()
    assert not stats.converged[1] and torch.isinf(stats.residual[1]) and int(stats.steps[1]) == 3
    others = torch.tensor([0, 2, 3])
    assert stats.converged[others].all()
    z_ref, _ = SOLVERS[name](f, f.z0(), f.graph_index, tol=1e-6, max_iter=100)
    keep = f.graph_index != 1
    torch.testing.assert_close(z[keep], z_ref[keep], rtol=0, atol=1e-5)


def test_anderson_matches_torchdeq():
    torchdeq_solver = pytest.importorskip("torchdeq.solver")
    f = GraphMap(sizes=(6,), rho=0.9, rho_v=0.05)
    z_ours, st = anderson(f, f.z0(), None, tol=1e-9, max_iter=200, m=5)  # one problem per row
    calls = [0]

    def counted(z):
        calls[0] += 1
        return f(z)

    z_theirs, _, _ = torchdeq_solver.get_solver("anderson")(
        counted, f.z0(), max_iter=200, tol=1e-9, stop_mode="rel", m=5, lam=1e-10
    )
    assert st.converged.all()
    torch.testing.assert_close(z_ours, z_theirs, rtol=0, atol=1e-5)


# ----------------------------------------------------------------- implicit gradients


def _loss(z, weights):
    return (weights * z).sum() + 0.5 * (z**2).sum()


def test_ift_gradient_matches_unrolled_autograd():
    f = GraphMap(rho=0.7)
    W = f.W.clone().requires_grad_(True)
    x = f.x.clone().requires_grad_(True)
    weights = torch.randn_like(f.x)
    fw = lambda z: f(z, W=W, x=x)  # noqa: E731

    z_out, stats, corrections = fixed_point_with_grad(
        fw, f.z0(), f.graph_index, tol=1e-12, max_iter=200, grad="ift", b_tol=1e-13, b_max_iter=200
    )
    assert corrections == [] and stats.converged.all()
    grads_ift = torch.autograd.grad(_loss(z_out, weights), (W, x))
    assert stats.backward["unconverged"] == 0 and stats.backward["nfe"] > 0

    z = f.z0()
    for _ in range(150):
        z = fw(z)
    grads_unrolled = torch.autograd.grad(_loss(z, weights), (W, x))
    for a, b in zip(grads_ift, grads_unrolled):
        assert float((a - b).norm() / b.norm()) < 1e-6


def test_ift_gradcheck_against_finite_differences():
    f = GraphMap(sizes=(2, 3), rho=0.6)
    x = f.x.clone().requires_grad_(True)

    def fixed_point_of(x_in):
        z, _, _ = fixed_point_with_grad(
            lambda z: f(z, x=x_in), f.z0(), f.graph_index, tol=1e-13, max_iter=200, b_tol=1e-13, b_max_iter=200
        )
        return z

    assert torch.autograd.gradcheck(fixed_point_of, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_phantom_gradient_is_unrolled_from_fixed_point():
    f = GraphMap(rho=0.7)
    x = f.x.clone().requires_grad_(True)
    fx = lambda z: f(z, x=x)  # noqa: E731
    z_out, stats, _ = fixed_point_with_grad(
        fx, f.z0(), f.graph_index, tol=1e-10, max_iter=100, grad="phantom", phantom_steps=3, phantom_tau=0.5
    )
    solver_nfe = int(stats.steps.max())
    assert stats.nfe == solver_nfe + 3
    z_star, _ = anderson(f, f.z0(), f.graph_index, tol=1e-10, max_iter=100)
    z = z_star
    for _ in range(3):
        z = 0.5 * z + 0.5 * fx(z)
    torch.testing.assert_close(z_out, z)
    (g_phantom,) = torch.autograd.grad(z_out.sum(), x)
    (g_ref,) = torch.autograd.grad(z.sum(), x)
    torch.testing.assert_close(g_phantom, g_ref)


def test_inference_and_none_make_no_extra_evaluations():
    f = GraphMap()
    x = f.x.clone().requires_grad_(True)
    calls = [0]

    def counted(z):
        calls[0] += 1
        return f(z, x=x)

    with torch.no_grad():
        z_out, stats, corrections = fixed_point_with_grad(counted, f.z0(), f.graph_index, n_states=2)
    assert calls[0] == stats.nfe == int(stats.steps.max()) and corrections == []
    assert not z_out.requires_grad and len(stats.states) == 2
    calls[0] = 0
    z_none, stats, _ = fixed_point_with_grad(counted, f.z0(), f.graph_index, grad="none")
    assert calls[0] == stats.nfe and not z_none.requires_grad
    torch.testing.assert_close(z_none, z_out)


def test_correction_states_carry_one_step_gradients():
    f = GraphMap()
    x = f.x.clone().requires_grad_(True)
    z_out, stats, corrections = fixed_point_with_grad(
        lambda z: f(z, x=x), f.z0(), f.graph_index, tol=1e-8, n_states=2
    )
    assert len(corrections) == 2 and stats.nfe == int(stats.steps.max()) + 1 + 2
    for c, s in zip(corrections, stats.states):
        assert c.requires_grad and c.shape == z_out.shape
        torch.testing.assert_close(c.detach(), f(s))
    (g,) = torch.autograd.grad(sum(c.sum() for c in corrections), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_unknown_gradient_mode_is_refused():
    f = GraphMap()
    with pytest.raises(ValueError, match="ift"):
        fixed_point_with_grad(f, f.z0(), f.graph_index, grad="unrolled")
