"""TorchSim model interface: batched results equal one-by-one ASE results, per-system warm
starts that follow their own system, stress, and TorchSim's own integrators driving the model."""
import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

ts = pytest.importorskip("torch_sim")

from dequiformer import DEQCalculator  # noqa: E402
from dequiformer.models import build_model  # noqa: E402
from dequiformer.torchsim import DEQTorchSimModel  # noqa: E402
from models_fixtures import TINY  # noqa: E402

DEQ = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre", "max_num_elements": 30}


def _model(**extra):
    torch.manual_seed(0)
    m = build_model({**DEQ, **extra}, {"max_iter": 80, "b_max_iter": 80})
    with torch.no_grad():
        for block in m.blocks:
            block.attention.proj.weight.mul_(0.3)
            block.ffn.linear_2.weight.mul_(0.3)
    return m


def _systems():
    a = molecule("CH3OH")
    b = molecule("H2O")
    b.positions += 0.05
    return [a, b, molecule("CH4")]


def test_batched_forward_equals_one_by_one_ase_calls():
    model = _model()
    tsm = DEQTorchSimModel(model, dtype=torch.float64, fp_reuse=False, tol=1e-9)
    systems = _systems()
    out = tsm(ts.io.atoms_to_state(systems, torch.device("cpu"), torch.float64))
    assert out["energy"].shape == (3,) and out["forces"].shape == (sum(len(s) for s in systems), 3)
    assert "stress" not in out
    calc = DEQCalculator(model, dtype="float64", fp_reuse=False, tol=1e-9)
    row = 0
    for i, atoms in enumerate(systems):
        atoms.calc = calc
        assert out["energy"][i].item() == pytest.approx(atoms.get_potential_energy(), abs=1e-7)
        np.testing.assert_allclose(out["forces"][row:row + len(atoms)].numpy(), atoms.get_forces(), atol=1e-6)
        row += len(atoms)
    assert len(tsm.stats["solver_steps"]) == 3 and all(tsm.stats["converged"])


def test_warm_starts_follow_their_own_system():
    tsm = DEQTorchSimModel(_model(), dtype=torch.float64, tol=1e-8, reuse_tol=1e-8)
    systems = _systems()
    state = ts.io.atoms_to_state(systems, torch.device("cpu"), torch.float64)
    tsm(state)
    cold = list(tsm.stats["solver_steps"])
    assert tsm.stats["reused"] == [False, False, False]
    state.positions = state.positions + 0.003
    tsm(state)
    assert tsm.stats["reused"] == [True, True, True]
    assert all(w < c for w, c in zip(tsm.stats["solver_steps"], cold))
    # a system swapped out for another (as autobatching does) starts cold; the others stay warm
    swapped = [systems[0], molecule("NH3"), systems[2]]
    state2 = ts.io.atoms_to_state(swapped, torch.device("cpu"), torch.float64)
    tsm(state2)
    assert tsm.stats["reused"] == [True, False, True]
    # the same species far away (another configuration): cold as well
    far = [systems[0].copy(), molecule("NH3"), systems[2].copy()]
    far[2].positions[0] += 3.0
    tsm(ts.io.atoms_to_state(far, torch.device("cpu"), torch.float64))
    assert tsm.stats["reused"][2] is False


def test_conservative_stress_and_torchsim_validator():
    model = _model(forces="conservative")
    tsm = DEQTorchSimModel(model, dtype=torch.float64, tol=1e-8, reuse_tol=1e-8)
    assert tsm.compute_stress
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.rattle(0.05, seed=1)
    out = tsm(ts.io.atoms_to_state([si], torch.device("cpu"), torch.float64))
    calc = DEQCalculator(model, dtype="float64", tol=1e-8, fp_reuse=False)
    si.calc = calc
    np.testing.assert_allclose(out["stress"][0].numpy(), si.get_stress(voigt=False), atol=1e-7)
    np.testing.assert_allclose(out["forces"].numpy(), si.get_forces(), atol=1e-6)
    from torch_sim.models.interface import validate_model_outputs

    validate_model_outputs(tsm, torch.device("cpu"), torch.float64)
    with pytest.raises(ValueError, match="compute_stress needs a conservative model"):
        DEQTorchSimModel(_model(), compute_stress=True)


def test_torchsim_nve_runs_batched_with_reuse():
    model = _model(forces="conservative")
    tsm = DEQTorchSimModel(model, dtype=torch.float64)
    systems = _systems()[:2]
    final = ts.integrate(system=systems, model=tsm, integrator=ts.nve, n_steps=5,
                         temperature=300, timestep=0.0005)
    assert final.n_systems == 2 and torch.isfinite(final.positions).all()
    assert tsm.calls >= 5 and all(tsm.stats["reused"]) and tsm.unconverged_systems == 0
