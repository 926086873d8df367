"""DEQuiformer: implicit gradients, per-graph solves, warm starts, recurrent dropout."""
import pytest
import torch

from dequiformer.models import build_model
from models_fixtures import TINY, ethanol, graph, rattled_crystal

DEQ = {**TINY, "name": "dequiformer", "num_layers": 1}


def contractive_model(**extra):
    """A tiny DEQuiformer whose layer is a clear contraction at random init.

    With ``norm_placement: pre`` and the sublayers' output projections scaled by 0.3 the
    layer contracts by ~0.5 (the per-graph rescale halves perturbations at the fixed point),
    so forward iteration converges to 1e-10 and unrolled autograd is a valid reference.
    """
    torch.manual_seed(0)
    m = build_model({**DEQ, "norm_placement": "pre", **extra}, {"tol": 1e-11, "b_tol": 1e-12, "max_iter": 200, "b_max_iter": 200})
    m = m.double()
    with torch.no_grad():
        for block in m.blocks:
            block.attention.proj.weight.mul_(0.3)
            block.ffn.linear_2.weight.mul_(0.3)
    return m


def loss_of(out):
    return out["energy"].pow(2).sum() + (out["forces"] * torch.linspace(-1, 1, out["forces"].numel(), dtype=out["forces"].dtype).view_as(out["forces"])).sum()


def unrolled_loss(m, g, steps=200):
    ctx, x = m.prepare(g)
    z = torch.zeros_like(x)
    for _ in range(steps):
        z = m.implicit_layer(z, x, ctx)
    return loss_of(m.decode(z, ctx))


def test_ift_gradient_matches_unrolled_autograd_and_finite_differences():
    m = contractive_model().eval()
    g = graph([ethanol(), rattled_crystal()])
    out = m(g)
    assert out["solver"].converged.all()
    params = [p for p in m.parameters()]
    ift = torch.autograd.grad(loss_of(out), params, allow_unused=True)
    unrolled = torch.autograd.grad(unrolled_loss(m, g), params, allow_unused=True)
    num, den = 0.0, 0.0
    for a, b in zip(ift, unrolled):
        if a is None or b is None:
            assert a is None and b is None or (a if a is not None else b).abs().max() == 0
            continue
        num += (a - b).pow(2).sum().item()
        den += b.pow(2).sum().item()
    assert (num / den) ** 0.5 < 1e-6

    # finite differences on a few entries of the implicit block's weights
    weight = m.blocks[0].attention.proj.weight
    grad_ift = ift[next(i for i, p in enumerate(params) if p is weight)]
    h = 1e-5
    for index in [(0, 0, 0), (1, 2, 3), (2, 5, 1)]:
        with torch.no_grad():
            weight[index] += h
            up = loss_of(m(g)).item()
            weight[index] -= 2 * h
            down = loss_of(m(g)).item()
            weight[index] += h
        fd = (up - down) / (2 * h)
        assert abs(fd - grad_ift[index].item()) <= 1e-5 * max(1.0, abs(fd))


@pytest.mark.parametrize("solver", ["anderson", "forward", "broyden"])
def test_fixed_point_and_outputs_do_not_depend_on_batch_mates(solver):
    torch.manual_seed(0)
    m = build_model(DEQ, {"solver": solver}).double().eval()
    a, b = ethanol(), rattled_crystal()
    with torch.no_grad():
        alone = m(graph(a), tol=1e-6, max_iter=30)
        batch = m(graph([b, a, b]), tol=1e-6, max_iter=30)
    n_b = len(b)
    assert torch.allclose(batch["fixed_point"][n_b:n_b + len(a)], alone["fixed_point"], atol=1e-6)
    assert torch.allclose(batch["forces"][n_b:n_b + len(a)], alone["forces"], atol=1e-6)
    assert torch.allclose(batch["energy"][1], alone["energy"][0], atol=1e-6)
    assert batch["solver"].steps[1] == alone["solver"].steps[0]


def test_anderson_needs_fewer_layer_evaluations_than_forward_iteration():
    m = contractive_model().eval()
    g = graph([ethanol(), rattled_crystal()])
    with torch.no_grad():
        anderson = m(g, solver="anderson", tol=1e-4)["solver"]
        forward = m(g, solver="forward", tol=1e-4)["solver"]
    assert anderson.converged.all() and forward.converged.all()
    assert anderson.steps.sum() < 0.8 * forward.steps.sum()


def test_warm_start_from_fixed_point_converges_in_at_most_two_evaluations():
    m = contractive_model().eval()
    g = graph([ethanol(), rattled_crystal()])
    with torch.no_grad():
        cold = m(g, tol=1e-8)
        warm = m(g, z0=cold["fixed_point"], tol=1e-4)
        relaxed = m(g, z0=cold["fixed_point"])  # defaults to deq.reuse_tol
    assert warm["solver"].converged.all() and int(warm["solver"].steps.max()) <= 2
    assert int(relaxed["solver"].steps.max()) <= 2
    assert torch.allclose(warm["forces"], cold["forces"], atol=1e-6)


def test_mismatched_warm_start_is_refused():
    m = contractive_model().eval()
    with torch.no_grad():
        fp = m(graph(ethanol()), tol=1e-4)["fixed_point"]
        with pytest.raises(ValueError, match="warm start z0 has shape"):
            m(graph(rattled_crystal()), z0=fp)


def test_dropout_masks_are_held_fixed_across_solver_iterations():
    m = contractive_model(path_drop=0.5, alpha_drop=0.3, proj_drop=0.3).train()
    g = graph([ethanol(), rattled_crystal()])
    out = m(g, tol=1e-9)
    # a fixed point to 1e-9 exists only if every iteration saw the same masks
    assert out["solver"].converged.all()
    ctx, x = m.prepare(g)  # prepare() draws no masks; the layer reuses the ones of this forward
    with torch.no_grad():
        again = m.implicit_layer(out["fixed_point"], x, ctx)
    assert torch.allclose(again, out["fixed_point"], atol=1e-7)
    masks = [d._mask for d in m.dropout_modules() if d.p > 0]
    assert masks and all(mk is not None for mk in masks)


def test_training_forward_returns_fixed_point_correction_states():
    m = contractive_model().train()
    out = m(graph([ethanol(), rattled_crystal()]), tol=1e-6)
    assert len(out["correction"]) == m.deq_cfg["fp_correction"]["states"] == 3
    loss = loss_of(out) + sum(loss_of(c) for c in out["correction"])
    loss.backward()
    assert out["solver"].backward  # the IFT backward solve ran and reported
    assert all(p.grad is not None for p in m.blocks.parameters())


def test_unknown_deq_key_is_named():
    with pytest.raises(ValueError, match="anderzon"):
        build_model(DEQ, {"anderzon": {}})


def test_layer_on_unconverged_graphs_only_equals_full_layer():
    torch.manual_seed(0)
    m = build_model(DEQ, {}).double().eval()
    g = graph([ethanol(), rattled_crystal(), ethanol()])
    ctx, x = m.prepare(g)
    z = torch.randn_like(x)
    active = g.batch != 1
    partial = m._partial_layer(x, ctx, x.shape)(z, active).view_as(x)
    full = m.implicit_layer(z, x, ctx)
    assert torch.allclose(partial[active], full[active], atol=1e-12)


def test_model_contract_is_explicit_not_duck_typed():
    from dequiformer.models import build_model
    from models_fixtures import TINY

    deq = build_model({**TINY, "name": "dequiformer", "num_layers": 2})
    explicit = build_model({**TINY, "name": "equiformer_v2", "num_layers": 3})
    assert deq.is_implicit and not explicit.is_implicit
    assert deq.blocks_per_solver_step == 2 and explicit.blocks_per_solver_step == 1
