"""Per-frame fixed-point store: each training frame's solve starts from its last fixed point."""
from __future__ import annotations

import torch
from ase import Atoms

from dequiformer import build_model
from dequiformer.train.fixed_point_store import FramewiseFixedPoints
from dequiformer.train.metrics_log import read_metrics_csv
from dequiformer.train.trainer import Trainer
from models_fixtures import TINY, ethanol, graph
from test_train import ethanol_npz, tiny_config  # noqa: F401  (fixture)


def _batch():
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    return graph([ethanol(), water])


def test_store_round_trip_missing_frames_and_species_change():
    g = _batch()
    store = FramewiseFixedPoints(max_mb=1)
    assert store.initial_guess([5, 7], g) is None
    z = torch.randn(g.num_atoms, 9, 4, dtype=torch.float64)
    store.update([5, 7], g, z)
    assert torch.equal(store.initial_guess([5, 7], g), z)
    # frame 7 unknown in another position: zero rows (a cold start) for it
    swapped = graph([Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), ethanol()])
    guess = store.initial_guess([9, 5], swapped)
    assert torch.equal(guess[:3], torch.zeros(3, 9, 4, dtype=torch.float64))
    assert torch.equal(guess[3:], z[:9])
    # the same frame index with other species is dropped, not reused
    assert store.initial_guess([7], graph([ethanol()])) is None
    restored = FramewiseFixedPoints(max_mb=1)
    restored.load_state_dict(store.state_dict())
    assert torch.equal(restored.initial_guess([5], graph([ethanol()])), z[:9])


def test_store_respects_its_memory_cap():
    g = _batch()
    z = torch.zeros(g.num_atoms, 9, 4, dtype=torch.float64)
    store = FramewiseFixedPoints(max_mb=(9 * 9 * 4 * 8 + 1) / 2**20)  # room for ethanol only
    store.update([0, 1], g, z)
    assert len(store) == 1


def test_warm_start_from_the_stored_fixed_point_takes_fewer_steps_same_result():
    torch.manual_seed(0)
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    model = build_model(cfg, {"tol": 1e-6, "max_iter": 60, "fp_correction": {"states": 0}}).double().train()
    g = _batch()
    cold = model(g)
    warm = model(g, z0=cold["fixed_point"], tol=1e-6)
    assert bool(cold["solver"].converged.all()) and bool(warm["solver"].converged.all())
    assert int(warm["solver"].steps.max()) < int(cold["solver"].steps.min())
    assert torch.allclose(warm["forces"], cold["forces"], rtol=0, atol=1e-4)
    assert torch.allclose(warm["energy"], cold["energy"], rtol=0, atol=1e-4)


def test_training_with_the_store_solves_in_fewer_steps(ethanol_npz, tmp_path):  # noqa: F811
    steps = {}
    for mb in (0, 64):
        cfg = tiny_config(ethanol_npz, epochs=3, lr=1e-3, warmup_lr=1e-3, min_lr=1e-3, fixed_point_store_mb=mb)
        cfg["deq"] = {"max_iter": 40, "tol": 1e-4, "fp_correction": {"states": 0}}
        cfg["model"]["norm_placement"] = "pre"
        Trainer(cfg, tmp_path / f"run{mb}").fit()
        rows = read_metrics_csv(tmp_path / f"run{mb}" / "metrics.csv")
        steps[mb] = [r["train_solver_steps"] for r in rows]
        assert all(r["train_bwd_steps"] > 0 and r["val_jacobian_radius"] > 0 for r in rows)
    # the first epoch is cold either way; later epochs start from last epoch's fixed points
    assert steps[64][0] == steps[0][0]
    assert steps[64][2] < 0.8 * steps[0][2]


def test_training_caps_apply_in_training_only():
    # deq.train_max_iter / train_b_max_iter cap the solves of training steps (warm-started from the
    # store); evaluation and inference keep max_iter / b_max_iter
    torch.manual_seed(0)
    cfg = {**TINY, "name": "dequiformer", "num_layers": 1, "norm_placement": "pre"}
    deq = {"tol": 1e-9, "max_iter": 30, "b_tol": 1e-9, "b_max_iter": 30, "fp_correction": {"states": 0},
           "train_max_iter": 3, "train_b_max_iter": 2}
    model = build_model(cfg, deq).double()
    g = _batch()
    out = model.train()(g)
    assert int(out["solver"].steps.max()) <= 3
    out["energy"].sum().backward()  # the IFT backward: its adjoint solve under the training cap
    assert max(out["solver"].backward["steps"]) <= 2
    assert int(model.eval()(g)["solver"].steps.min()) > 3
