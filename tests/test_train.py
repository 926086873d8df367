"""Training: schedules, parameter groups, batching, losses, a short run, resume, DDP, bad input."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dequiformer.cli import main as cli
from dequiformer.data.graph import AtomicGraph
from dequiformer.data.readers import Frame
from dequiformer.train.checkpoint import load_checkpoint
from dequiformer.train.dataset import epoch_batches, frame_to_graph
from dequiformer.train.losses import ForceFieldLoss, error_sums, loss_name
from dequiformer.train.metrics_log import read_metrics_csv
from dequiformer.train.schedules import CosineWarmupSchedule, cosine_warmup_lr
from dequiformer.train.settings import check_config, resolve_train
from dequiformer.train.optimizer import parameter_groups
from dequiformer.train.trainer import Trainer

cli.COMMANDS.setdefault("train", ("dequiformer.cli.train", "train a force field"))
cli.COMMANDS.setdefault("eval", ("dequiformer.cli.eval", "evaluate a checkpoint"))

TINY_MODEL = dict(
    name="dequiformer", num_layers=1, lmax=2, mmax=1, sphere_channels=8, attn_hidden_channels=8, num_heads=2,
    attn_alpha_channels=4, attn_value_channels=4, ffn_hidden_channels=8, edge_channels=8, num_radial_basis=8,
    cutoff=4.0, max_neighbors=None, max_num_elements=10, avg_num_nodes="auto", avg_degree="auto",
    alpha_drop=0.0, path_drop=0.0,
)


def write_ethanol_npz(path: Path, n: int = 24, seed: int = 0) -> Path:
    """Rattled ethanol frames labelled by ASE's EMT, in the sGDML npz layout (labels read as kcal/mol)."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    R, E, F = [], [], []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        R.append(atoms.positions.copy())
        E.append([atoms.get_potential_energy()])
        F.append(atoms.get_forces())
    np.savez(path, R=np.array(R), z=base.numbers, E=np.array(E), F=np.array(F), name="ethanol")
    return path


def tiny_config(data: Path, **train) -> dict:
    """A config dict for a tiny DEQuiformer on ``data`` (train keys overridable)."""
    t = dict(epochs=2, batch_size=4, lr=5e-3, warmup_lr=1e-4, min_lr=1e-4, warmup_epochs=0, clip_grad_norm=100,
             progress=False, tensorboard=False, seed=3)
    t.update(train)
    return {"model": dict(TINY_MODEL), "deq": {"max_iter": 12, "tol": 1e-3},
            "data": {"path": str(data), "n_train": 12, "n_val": 4, "n_test": None},
            "train": t}


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def ethanol_npz(tmp_path_factory) -> Path:
    return write_ethanol_npz(tmp_path_factory.mktemp("data") / "ethanol_emt.npz")




# ------------------------------------------------------------------ pure pieces
def test_cosine_warmup_schedule():
    lr = [cosine_warmup_lr(s, 100, 10, 5e-4, 1e-6, 1e-6) for s in range(101)]
    assert lr[0] == pytest.approx(1e-6)
    assert lr[5] == pytest.approx(1e-6 + 0.5 * (5e-4 - 1e-6))
    assert lr[10] == pytest.approx(5e-4)
    assert lr[55] == pytest.approx(1e-6 + 0.5 * (5e-4 - 1e-6))
    assert lr[100] == pytest.approx(1e-6)
    assert all(a >= b - 1e-15 for a, b in zip(lr[10:], lr[11:]))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWarmupSchedule(opt, 100, 10, 5e-4, 1e-6, 1e-6)
    for _ in range(7):
        sched.step()
    state = sched.state_dict()
    sched2 = CosineWarmupSchedule(opt, 100, 10, 5e-4, 1e-6, 1e-6)
    sched2.load_state_dict(state)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr[7])


def test_wall_clock_schedule_decays_over_the_budget_and_resumes():
    """lr_schedule: seconds — warmup by steps, then the cosine runs from the end of the warmup to
    the budget, whatever the number of steps; the clock is part of the resumable state."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineWarmupSchedule(opt, 10_000, 2, 1.0, 0.0, 0.01, budget_seconds=10.0)
    sched.step(1.0)
    assert sched.current_lr() == pytest.approx(0.5)          # warmup: by steps
    sched.step(2.0)
    assert sched.current_lr() == pytest.approx(1.0)          # decay starts at 2 s
    sched.step(6.0)
    assert sched.current_lr() == pytest.approx(0.505)        # half way from 2 s to 10 s
    again = CosineWarmupSchedule(opt, 10_000, 2, 1.0, 0.0, 0.01, budget_seconds=10.0)
    again.load_state_dict(sched.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.505)
    again.step(12.0)
    assert again.current_lr() == pytest.approx(0.01)         # past the budget: min_lr


def test_wall_clock_schedule_stops_mid_epoch_at_min_lr(ethanol_npz, tmp_path):
    cfg = tiny_config(ethanol_npz, epochs=5, batch_size=1, max_seconds=1e-6, lr_schedule="seconds")
    trainer = Trainer(cfg, tmp_path / "run")
    summary = trainer.fit()
    assert summary["epochs"] == 1 and summary["stopped"] == "max_seconds"
    assert trainer.step == 1 < trainer.steps_per_epoch       # the budget ended the epoch after one step
    assert trainer.schedule.current_lr() == pytest.approx(cfg["train"]["min_lr"])
    assert read_metrics_csv(tmp_path / "run" / "metrics.csv")[0]["val_forces_mae"] is not None
    with pytest.raises(ValueError, match="train.max_seconds"):
        resolve_train({"lr_schedule": "seconds"})


def test_parameter_groups_exempt_norms_biases_embeddings():
    from dequiformer.models import build_model

    model = build_model({**TINY_MODEL, "avg_num_nodes": 9.0, "avg_degree": 8.0}, {})
    decay, no_decay = parameter_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "encoder.sphere_embedding.weight" in no_decay["names"]
    assert "blocks.0.norm_1.affine_weight" in no_decay["names"]
    assert "blocks.0.ffn.linear_1.bias" in no_decay["names"]
    assert "blocks.0.ffn.linear_1.weight" in decay["names"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="no_weight_decay"):
        parameter_groups(model, 0.01, ["norms"])


def test_epoch_batches_shard_the_global_batch():
    single = epoch_batches(10, 4, epoch=3, seed=1)
    ranks = [epoch_batches(10, 2, epoch=3, seed=1, rank=r, world_size=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 3
    for b, (r0, r1) in enumerate(zip(*ranks)):
        assert sorted(np.concatenate([r0, r1])) == sorted(single[b])
    assert not np.array_equal(np.concatenate(epoch_batches(10, 4, epoch=4, seed=1)), np.concatenate(single))
    # a last global batch smaller than the world is dropped so every rank has work
    assert len(epoch_batches(11, 2, world_size=4, rank=3)) == 1
    last = epoch_batches(13, 2, world_size=4, rank=3)
    assert len(last) == 2 and len(last[1]) == 1


def test_losses_and_fixed_atoms():
    g = AtomicGraph.from_arrays(np.eye(3) * 1.5, [1, 1, 8], cutoff=3.0, dtype=torch.float64,
                                energy=2.0, forces=np.zeros((3, 3)))
    g.energy = g.energy.to(torch.float64)
    g.fixed = torch.tensor([False, True, False])
    forces = torch.tensor([[3.0, 4.0, 0.0], [100.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    out = {"energy": torch.tensor([5.0], dtype=torch.float64), "forces": forces}
    loss, parts = ForceFieldLoss("l2mae", "l2mae", 1.0, 10.0)(out, g, scales=(1.5, 2.0))
    # energy |5-2|/1.5 = 2; forces (5 + 1) / 2 atoms / 2 = 1.5 (the fixed atom is ignored)
    assert parts["energy_loss"] == pytest.approx(2.0) and parts["force_loss"] == pytest.approx(1.5)
    assert float(loss) == pytest.approx(2.0 + 15.0)
    _, parts = ForceFieldLoss("mse", "mae", 1.0, 1.0)(out, g, scales=(1.0, 1.0))
    assert parts["energy_loss"] == pytest.approx(9.0) and parts["force_loss"] == pytest.approx(8.0 / 6)
    sums = error_sums(out, g)
    assert sums["forces_abs"] == pytest.approx(8.0) and sums["n_forces"] == 6
    assert loss_name("L1") == "mae"
    # OC20 frames carry `fixed` into the training graph; energy labels stay float64
    frame = Frame(positions=np.eye(3) * 1.5, numbers=np.array([1, 1, 8]), cell=None, pbc=np.zeros(3, bool),
                  energy=-406000.123, forces=np.zeros((3, 3)), fixed=np.array([False, True, False]))
    fg = frame_to_graph(frame, 3.0, None, torch.float32)
    assert fg.fixed.tolist() == [False, True, False] and fg.energy.dtype == torch.float64
    assert float(fg.energy) == -406000.123
    with pytest.raises(ValueError, match="train.force_loss.*huber"):
        ForceFieldLoss(force_loss="huber")


# ------------------------------------------------------------------ training runs
def test_short_training_lowers_force_mae(ethanol_npz, tmp_path):
    cfg = tiny_config(ethanol_npz, epochs=8, lr=1e-2, warmup_lr=1e-2, min_lr=1e-3, ema_decay=0.5)
    cfg["data"]["n_train"] = 16
    summary = Trainer(cfg, tmp_path / "run").fit()
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    first, last = rows[0], rows[-1]
    assert last["train_forces_mae"] < 0.85 * first["train_forces_mae"]
    assert min(r["val_forces_mae"] for r in rows[-3:]) < first["val_forces_mae"]
    for key in ("lr", "seconds", "train_energy_mae", "val_energy_mae", "train_solver_steps", "val_solver_steps"):
        assert all(r[key] is not None and math.isfinite(r[key]) for r in rows), key
    peaks = [r["peak_rss_mb"] for r in rows]  # a high-water mark: positive, never falls
    assert peaks[0] > 0 and peaks == sorted(peaks) and peaks[-1] <= summary["peak_rss_mb"]
    run = tmp_path / "run"
    for name in ("last.pt", "best.pt", "config.yaml", "splits.npz", "metrics.csv", "train.log"):
        assert (run / name).exists(), name
    log = (run / "train.log").read_text()  # every epoch line, time-stamped
    assert log.count("epoch ") >= 8 and "epoch 8/8" in log and " INFO dequiformer.train.trainer: " in log
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["energy_units"] == "kcal/mol"
    assert isinstance(saved["model"]["avg_degree"], float) and 0 < saved["model"]["avg_degree"] <= 8
    assert summary["best"]["epoch"] is not None


def _metric_rows(path: Path) -> list[dict]:
    rows = read_metrics_csv(path)
    timings = ("seconds", "ms_per_step", "elapsed", "rss")
    return [{k: v for k, v in r.items() if not any(t in k for t in timings)} for r in rows]


def test_grad_force_every_takes_the_gradient_force_loss_on_every_kth_step(ethanol_npz, tmp_path):
    cfg = tiny_config(ethanol_npz, epochs=2, grad_force_weight=10.0, grad_force_every=3)
    trainer = Trainer(cfg, tmp_path / "run")
    asked, forward = [], trainer.ddp_model.forward

    def spy(graph, **kwargs):  # what each training forward was asked for
        if trainer.model.training:
            asked.append(bool(kwargs.get("grad_forces")))
        return forward(graph, **kwargs)

    trainer.ddp_model.forward = spy
    trainer.fit()
    assert asked == [True, False, False, True, False, False]  # 3 steps per epoch; global step % 3 == 0
    graph = trainer.train_graphs.batch([0])
    out = {"energy": torch.zeros(1, dtype=graph.forces.dtype), "forces": torch.zeros_like(graph.forces)}
    with pytest.raises(ValueError, match="grad_forces"):  # a step that takes the term needs -dE/dpos
        trainer.loss_fn(out, graph, (1.0, 1.0))
    _, parts = trainer.loss_fn(out, graph, (1.0, 1.0), grad_forces=False)
    assert parts["grad_force_loss"] == 0.0


def test_stage_two_switches_loss_weights_at_its_start_and_best_pt_restarts(ethanol_npz, tmp_path):
    # 4 epochs x 3 steps; from half of the run on: energy weight 50 and the -dE/dpos loss
    two = {"start": 0.5, "energy_weight": 50.0, "grad_force_weight": 10.0}
    cfg = tiny_config(ethanol_npz, epochs=4, energy_weight=1.0, stage_two=two, best_metric="energy+forces")
    trainer = Trainer(cfg, tmp_path / "run")
    seen, forward = [], trainer.ddp_model.forward

    def spy(graph, **kwargs):
        if trainer.model.training:
            seen.append((trainer.loss_fn.energy_weight, trainer.loss_fn.grad_force_weight,
                         bool(kwargs.get("grad_forces"))))
        return forward(graph, **kwargs)

    trainer.ddp_model.forward = spy
    summary = trainer.fit()
    assert seen == [(1.0, 0.0, False)] * 6 + [(50.0, 10.0, True)] * 6
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert [r["stage"] for r in rows] == [1, 1, 2, 2]
    best = summary["best"]  # the best of the second stage, by energy + forces
    scores = {r["epoch"]: r["val_energy_mae"] + r["val_forces_mae"] for r in rows[2:]}
    assert best["stage"] == 2 and best["metric"] == "energy+forces" and best["epoch"] == min(scores, key=scores.get)
    assert best["value"] == pytest.approx(scores[best["epoch"]])
    # resumed after the first stage: the second stage's weights come back with the progress
    Trainer(cfg, tmp_path / "cut").fit(stop_after=2)
    resumed = Trainer(cfg, tmp_path / "cut", resume_state=load_checkpoint(tmp_path / "cut" / "last.pt"))
    out = resumed.fit()
    assert resumed.loss_fn.energy_weight == 50.0 and out["best"]["stage"] == 2
    with pytest.raises(ValueError, match="train.stage_two.start"):
        resolve_train({"stage_two": {"energy_weight": 100}})
    with pytest.raises(ValueError, match="changes no loss weight"):
        resolve_train({"stage_two": {"start": 0.8}})
    with pytest.raises(ValueError, match="train.stage_two.start"):
        resolve_train({"stage_two": {"start": 1.5, "energy_weight": 100}})
    with pytest.raises(ValueError, match="train.best_metric"):
        resolve_train({"best_metric": "loss"})


def test_stage_two_conservative_fine_tunes_a_direct_model_into_a_conservative_one(ethanol_npz, tmp_path):
    # direct forces (with the -dE/dpos loss) for the first half, then the force loss on -dE/dpos alone
    two = {"start": 0.5, "forces": "conservative"}
    cfg = tiny_config(ethanol_npz, epochs=2, grad_force_weight=10.0, stage_two=two)
    trainer = Trainer(cfg, tmp_path / "run")
    seen, forward = [], trainer.ddp_model.forward

    def spy(graph, **kwargs):
        if trainer.model.training:
            seen.append((trainer.model.conservative, trainer.loss_fn.grad_force_weight))
        return forward(graph, **kwargs)

    trainer.ddp_model.forward = spy
    trainer.fit()
    assert seen == [(False, 10.0)] * 3 + [(True, 0.0)] * 3
    # the stage's checkpoints are conservative models: their forces are -dE/dpos
    state = load_checkpoint(tmp_path / "run" / "best.pt")
    assert state["config"]["model"]["forces"] == "conservative" and state["best"]["stage"] == 2
    from dequiformer.train.checkpoint import build_from_checkpoint

    model = build_from_checkpoint(state).eval()
    graph = trainer.train_graphs.batch([0])
    out = model(graph, grad_forces=True)
    assert model.conservative and torch.equal(out["forces"], out["grad_forces"])
    with torch.no_grad():  # (the direct head is still there, untrained in the second stage)
        ctx, x = model.prepare(graph)
        direct = model.decode(model.trunk(x, ctx)[0], ctx)["forces"]
    assert not torch.allclose(out["forces"], direct, atol=1e-3)
    # a run resumed in the second stage comes back conservative (its checkpoint's config says so)
    Trainer(cfg, tmp_path / "cut").fit(stop_after=1)
    first = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert first["config"]["model"]["forces"] == "direct"
    resumed = Trainer(first["config"], tmp_path / "cut", resume_state=first)
    resumed.fit()
    assert resumed.model.conservative
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["config"]["model"]["forces"] == "conservative"
    with pytest.raises(ValueError, match="stage_two.grad_force_weight"):
        resolve_train({"stage_two": {"start": 0.5, "forces": "conservative", "grad_force_weight": 5.0}})
    with pytest.raises(ValueError, match="stage_two.forces"):
        resolve_train({"stage_two": {"start": 0.5, "forces": "direct"}})


def test_resume_matches_uninterrupted_run(ethanol_npz, tmp_path):
    # float64, dropout and EMA on: the RNG, EMA, optimizer and schedule states must all resume
    cfg = tiny_config(ethanol_npz, epochs=3, dtype="float64", ema_decay=0.7, warmup_epochs=1)
    cfg["data"]["n_train"] = 8
    cfg["model"].update(alpha_drop=0.1, path_drop=0.1)
    Trainer(cfg, tmp_path / "full").fit()
    Trainer(cfg, tmp_path / "cut").fit(stop_after=2)  # as if killed during epoch 3
    assert len(read_metrics_csv(tmp_path / "cut" / "metrics.csv")) == 2
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--json", str(tmp_path / "summary.json")]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["last"]["epoch"] == 3 and summary["units"]["energy"] == "kcal/mol"
    full, cut = _metric_rows(tmp_path / "full" / "metrics.csv"), _metric_rows(tmp_path / "cut" / "metrics.csv")
    assert len(full) == len(cut) == 3
    for a, b in zip(full, cut):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    wa = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    wb = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key, value in wa["model"].items():
        torch.testing.assert_close(value, wb["model"][key], rtol=1e-9, atol=1e-12)
    # a run directory with a checkpoint is not silently overwritten
    cfg_path = write_config(cfg, tmp_path / "cfg.yaml")
    assert cli.main(["train", str(cfg_path), "--run-dir", str(tmp_path / "full")]) == 2


def test_kill_mid_epoch_loses_at_most_checkpoint_every_steps(ethanol_npz, tmp_path, monkeypatch):
    cfg = tiny_config(ethanol_npz, epochs=2, dtype="float64", ema_decay=0.7, checkpoint_every=2, batch_size=2)
    cfg["data"]["n_train"] = 8  # 4 steps per epoch at batch 2
    cfg["model"].update(alpha_drop=0.1, path_drop=0.1)
    Trainer(cfg, tmp_path / "full").fit()
    trainer = Trainer(cfg, tmp_path / "cut")
    real_step, calls = trainer.optimizer.step, []

    def dying_step(*args, **kwargs):  # killed during the 7th optimizer step (epoch 2, batch 3)
        if len(calls) == 6:
            raise KeyboardInterrupt("killed")
        calls.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer.optimizer, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["step"] == 6 and saved["partial_epoch"]["batches_done"] == 2
    assert cli.main(["train", "--resume", str(tmp_path / "cut")]) == 0
    full, cut = _metric_rows(tmp_path / "full" / "metrics.csv"), _metric_rows(tmp_path / "cut" / "metrics.csv")
    assert len(full) == len(cut) == 2
    for key in ("train_loss", "train_forces_mae", "val_forces_mae", "val_energy_mae"):
        assert full[-1][key] == pytest.approx(cut[-1][key], rel=1e-9), key
    wa = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    wb = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key, value in wa["model"].items():
        torch.testing.assert_close(value, wb["model"][key], rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="checkpoint_every"):
        Trainer(tiny_config(ethanol_npz, checkpoint_every=-1), tmp_path / "bad")


@pytest.mark.slow
def test_two_torchrun_processes_match_one_process(ethanol_npz, tmp_path):
    """Two gloo processes with 2 structures each make the same update as one process on all 4."""
    cfg = tiny_config(ethanol_npz, epochs=1, dtype="float64", batch_size=4, ema_decay=0.5)
    cfg["data"].update(n_train=4, n_val=3)
    path = write_config(cfg, tmp_path / "ddp.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "dequiformer.cli.train", str(path), "--run-dir", str(tmp_path / "ddp"), "--set", "train.batch_size=2"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    Trainer(cfg, tmp_path / "single").fit()
    a = torch.load(tmp_path / "single" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert b["world_size"] == 2 and len(b["rng"]) == 2 and a["step"] == b["step"] == 1
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=1e-8, atol=1e-10)
    for key, value in a["ema"]["shadow"].items():
        torch.testing.assert_close(value, b["ema"]["shadow"][key], rtol=1e-8, atol=1e-10)
    ra, rb = a["metrics"][0], b["metrics"][0]
    for key in ("train_loss", "train_forces_mae", "val_forces_mae", "val_energy_mae"):
        assert ra[key] == pytest.approx(rb[key], rel=1e-8), key


# ------------------------------------------------------------------ bad input
def test_bad_inputs(ethanol_npz, tmp_path, capsys):
    cfg = tiny_config(ethanol_npz)
    with pytest.raises(ValueError, match="train.force_loss"):
        resolve_train({"force_loss": "huber"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\] in train"):
        resolve_train({"epoch": 3})
    with pytest.raises(ValueError, match="train.dtype"):
        resolve_train({"dtype": "float16"})
    with pytest.raises(ValueError, match="config section 'data'"):
        check_config({k: v for k, v in cfg.items() if k != "data"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_trian'\] in data"):
        check_config({**cfg, "data": {**cfg["data"], "n_trian": 4}})
    no_path = {**cfg, "data": {"n_train": 4}}
    with pytest.raises(ValueError, match="data.path"):
        Trainer(no_path, tmp_path / "nopath")
    missing = write_config({**cfg, "data": {**cfg["data"], "path": str(tmp_path / "nope.npz")}}, tmp_path / "m.yaml")
    assert cli.main(["train", str(missing), "--run-dir", str(tmp_path / "missing")]) == 2
    assert "nope.npz" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "no_config.yaml")]) == 2
    assert "no_config.yaml" in capsys.readouterr().err
    bad_loss = write_config(cfg, tmp_path / "b.yaml")
    assert cli.main(["train", str(bad_loss), "--run-dir", str(tmp_path / "b"), "--set", "train.energy_loss=l3"]) == 2
    assert "train.energy_loss" in capsys.readouterr().err
    assert cli.main(["train", "--resume", str(tmp_path / "never_ran")]) == 2
    assert "last.pt" in capsys.readouterr().err


def test_max_seconds_stops_after_the_epoch_that_exhausts_the_budget(ethanol_npz, tmp_path):
    cfg = tiny_config(ethanol_npz, epochs=5, max_seconds=1e-6)
    summary = Trainer(cfg, tmp_path / "run").fit()
    assert summary["epochs"] == 1 and summary["stopped"] == "max_seconds"
    assert summary["seconds"] > 0 and summary["peak_rss_mb"] >= summary["start_rss_mb"] > 0
    rows = read_metrics_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 1 and rows[0]["elapsed"] == pytest.approx(summary["seconds"])
    with pytest.raises(ValueError, match="train.max_seconds"):
        resolve_train({"max_seconds": -1})


def test_runs_in_one_process_each_log_to_their_own_train_log(ethanol_npz, tmp_path):
    import logging

    cfg = tiny_config(ethanol_npz, epochs=1)
    Trainer(cfg, tmp_path / "a").fit()
    Trainer(cfg, tmp_path / "b").fit()
    log_a, log_b = (tmp_path / "a" / "train.log").read_text(), (tmp_path / "b" / "train.log").read_text()
    assert log_a.count("epoch 1/1") == 1 and log_b.count("epoch 1/1") == 1
    assert not [h for h in logging.getLogger("dequiformer").handlers if isinstance(h, logging.FileHandler)]
