"""Training memory of the DEQuiformer: fixed-point correction states must not cost the memory of
a deep network. With ``deq.recompute`` (the default) the tracked layer evaluations and the heads
on each correction state are rebuilt in backward, one at a time, instead of being stored."""
import pytest
import torch

from dequiformer import build_model
from dequiformer.train.losses import ForceFieldLoss
from dequiformer.train.trainer import Trainer
from models_fixtures import TINY, ethanol, graph
from test_train import ethanol_npz, tiny_config  # noqa: F401  (fixture)


def _model(states: int, recompute: bool, **deq_overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    deq = {"tol": 1e-6, "max_iter": 30, "b_tol": 1e-8, "b_max_iter": 60, "recompute": recompute,
           "fp_correction": {"states": states, "weight": 0.8}, **deq_overrides}
    return build_model(cfg, deq).double().train()


def _held_forward(model: torch.nn.Module, g, **kwargs) -> tuple[int, dict]:
    """Bytes of tensors held for backward after one training forward (distinct storages), and its outputs."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(g, **kwargs)
    return sum(storages.values()), out


def _saved_bytes(model: torch.nn.Module, g) -> tuple[int, torch.Tensor]:
    """Bytes held for backward after one training forward, and the loss."""
    held, out = _held_forward(model, g)
    loss, _ = ForceFieldLoss(correction_weight=0.8)(out, g, (1.0, 1.0))
    return held, loss


def _labelled():
    g = graph([ethanol()])
    g.energy = torch.tensor([1.0], dtype=torch.float64)
    g.forces = torch.randn(g.num_atoms, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return g


def test_correction_states_do_not_each_hold_a_layer_of_activations():
    g = _labelled()
    stored = {k: _saved_bytes(_model(k, recompute=False), g)[0] for k in (0, 3)}
    recomputed = {k: _saved_bytes(_model(k, recompute=True), g)[0] for k in (0, 3)}
    per_state = (stored[3] - stored[0]) / 3  # what one decoded state costs when stored
    assert per_state > 0
    # with recompute, three states add much less than one stored state (only their inputs)
    assert recomputed[3] - recomputed[0] < 0.25 * per_state
    # and the whole step holds less than the stored variant without any state
    assert recomputed[3] < stored[0]


@pytest.mark.parametrize("states", [0, 2])
def test_recompute_gives_the_same_gradients(states):
    g = _labelled()
    grads = []
    for recompute in (False, True):
        model = _model(states, recompute)
        _, loss = _saved_bytes(model, g)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert grads[0].shape == grads[1].shape
    assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-11)


def test_jacobian_regulariser_makes_the_layer_more_contractive():
    torch.manual_seed(0)
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    model = build_model(cfg, {"tol": 1e-4, "max_iter": 40, "jacobian_reg": 1.0,
                              "fp_correction": {"states": 0}}).double()
    g = _labelled()
    before = float(model.jacobian_radius(g, iters=20).mean())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        model.train()
        out = model(g)
        opt.zero_grad()
        out["jacobian_loss"].backward()
        opt.step()
    assert out["jacobian_loss"].item() > 0
    after = float(model.jacobian_radius(g, iters=20).mean())
    assert after < 0.8 * before


def test_radius_penalty_holds_the_dominant_mode_below_its_target():
    torch.manual_seed(0)
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    model = build_model(cfg, {"tol": 1e-4, "max_iter": 40, "radius_reg": 1.0, "radius_target": 0.2,
                              "fp_correction": {"states": 0}}).double()
    g = _labelled()
    before = float(model.jacobian_radius(g, iters=20).max())
    assert before > 0.3
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        model.train()
        out = model(g)
        opt.zero_grad()
        out["radius_loss"].backward()
        opt.step()
    assert out["train_radius"].shape == (1,)
    after = float(model.jacobian_radius(g, iters=20).max())
    assert after < 0.7 * before
    # below the target the hinge is exactly zero: no pull on the weights
    model.deq_cfg["radius_target"] = 10.0
    assert float(model(g)["radius_loss"].detach()) == 0.0


def test_negative_radius_penalty_is_refused():
    with pytest.raises(ValueError, match="radius_reg"):
        build_model({**TINY, "name": "dequiformer"}, {"radius_reg": -1})


def test_deferred_penalties_give_the_layer_the_same_gradient_without_holding_their_graph():
    """``defer_penalties`` (the trainer's single-process default): the contractivity penalties are
    evaluated after the main backward, so the forward holds less for backward, and the implicit
    layer's parameters receive the same gradient as with the penalties in the loss."""
    g = _labelled()
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    deq = {"tol": 1e-8, "max_iter": 60, "b_tol": 1e-9, "b_max_iter": 80, "jacobian_reg": 2.0, "radius_reg": 3.0,
           "radius_target": 0.0, "fp_correction": {"states": 0}}
    results = {}
    for defer in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg, deq).double().train()
        model.defer_penalties = defer
        held, loss = _saved_bytes(model, g)
        torch.manual_seed(1)  # the same random probes in both orders
        if defer:
            out = model(g)
            parts: dict = {}
            main, _ = ForceFieldLoss()(out, g, (1.0, 1.0))
            main.backward()
            torch.manual_seed(1)
            terms = out.pop("deferred_penalties")
            assert len(terms) == 2  # one backward per penalty: their graphs never coexist
            for term in terms:
                ForceFieldLoss.add_penalties(term(), parts).backward()
            assert parts["jacobian_loss"] > 0 and parts["radius_loss"] > 0
        else:
            out = model(g)
            ForceFieldLoss()(out, g, (1.0, 1.0))[0].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("blocks.") and p.grad is not None}
        results[defer] = (held, grads)
    assert results[True][0] < results[False][0]
    assert len(results[True][1]) > 10
    for name, grad in results[False][1].items():
        assert torch.allclose(results[True][1][name], grad, rtol=1e-6, atol=1e-10), name


def test_penalty_scale_skips_or_scales_the_penalties():
    """``deq.penalty_every`` K: the trainer sets ``penalty_scale`` to 0 on the steps it skips (no
    penalty is evaluated) and to K on the others (K times the weighted penalty of one step)."""
    g = _labelled()
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    deq = {"tol": 1e-8, "max_iter": 60, "jacobian_reg": 2.0, "radius_reg": 3.0, "radius_target": 0.0,
           "fp_correction": {"states": 0}, "penalty_every": 3}
    torch.manual_seed(0)
    model = build_model(cfg, deq).double().train()
    values = {}
    for scale in (1.0, 0.0, 3.0):
        model.penalty_scale = scale
        torch.manual_seed(1)  # the same random probes
        out = model(g)
        values[scale] = (out.get("jacobian_loss"), out.get("radius_loss"))
    assert values[0.0] == (None, None)
    for one, three in zip(values[1.0], values[3.0]):
        assert float(one.detach()) > 0
        torch.testing.assert_close(three, 3 * one)


def test_trainer_applies_the_penalties_on_every_kth_step(ethanol_npz, tmp_path):  # noqa: F811
    cfg = tiny_config(ethanol_npz, epochs=1)
    cfg["deq"] = {"max_iter": 20, "tol": 1e-4, "fp_correction": {"states": 0}, "jacobian_reg": 1.0, "penalty_every": 2}
    trainer = Trainer(cfg, tmp_path / "run")
    scales = []
    trainer.model.register_forward_pre_hook(lambda m, args: scales.append(m.penalty_scale))
    trainer.fit()
    train_calls = scales[:trainer.step]  # (validation follows, in eval mode)
    assert len(train_calls) >= 3
    assert train_calls == [2.0 if s % 2 == 0 else 0.0 for s in range(len(train_calls))]


def test_penalty_every_must_be_positive():
    with pytest.raises(ValueError, match="penalty_every"):
        build_model({**TINY, "name": "dequiformer"}, {"penalty_every": 0})


def test_force_tangent_none_holds_less_for_the_gradient_force_loss():
    """``deq.force_tangent: none`` builds no double-backward graph of ``J^T g``: a training forward
    with the loss on -dE/dpos holds less for backward than with ``one_step``."""
    g = _labelled()
    held = {}
    for mode in ("one_step", "none"):
        held[mode], out = _held_forward(_model(0, recompute=True, force_tangent=mode), g, grad_forces=True)
        assert out["grad_forces"].requires_grad
    assert held["none"] < 0.8 * held["one_step"]


def test_allocation_peak_sees_memory_freed_inside_the_block():
    """The CPU peak counter (what `bench train` reports) sees a 40 MB temporary freed before the
    block ends, in backward too, and not what was allocated before the block."""
    from dequiformer.memory import AllocationPeak, allocated_mb

    if allocated_mb() is None:
        pytest.skip("the C library does not report its heap (mallinfo2 is glibc 2.33+)")
    held = torch.ones(10_000_000)  # before the block: not counted
    with AllocationPeak() as peak:
        tmp = torch.ones(10_000_000) * 2.0
        del tmp
    assert 38 <= peak.peak_mb < 80
    x = torch.ones(1000, requires_grad=True)
    with AllocationPeak() as peak:
        (x.exp() * 2.0).sum().backward()
    small = peak.peak_mb
    assert small < 5
    # a gradient made in backward (40 MB for x.grad) is seen as well
    big = torch.ones(10_000_000, requires_grad=True)
    loss = (big * 2.0).sum()
    with AllocationPeak() as peak:
        loss.backward()
    assert peak.peak_mb >= 38
    del held
