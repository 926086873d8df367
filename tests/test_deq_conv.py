"""Implicit conv classifier for graph images: model, solvers, gradients, trainer and CLI.

Data are tiny images generated here (a colour pattern decides the class) and a small
file in the CIFAR-10 python layout; the model is shrunk (8 channels) except where the
default 64,842-parameter network itself is checked.
"""
from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dequiformer.classify.splits import load_image_splits
from dequiformer.classify.train import train_classifier
from dequiformer.cli import main as climain
from dequiformer.imaging.image_dataset import ImageDataset
from dequiformer.models.deq_conv import DEQConvClassifier

climain.COMMANDS.setdefault("classify", ("dequiformer.cli.classify", "graph-image classifiers"))

TINY = {"channels": 8, "inner_channels": 8, "num_groups": 2, "pool_size": 4}


def pattern_images(n: int, size: int = 16, seed: int = 0) -> ImageDataset:
    """Class 0: bright red upper half; class 1: bright blue lower half; uniform noise elsewhere."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 90, size=(n, size, size, 3)).astype(np.uint8)
    half = size // 2
    images[labels == 0, :half, :, 0] += 150
    images[labels == 1, half:, :, 2] += 150
    return ImageDataset(images, labels, ["red_top", "blue_bottom"], [f"img{i}" for i in range(n)])


def write_config(tmp_path: Path, data_path: Path, **sections: dict) -> Path:
    cfg = {
        "model": {"name": "deq_conv", **TINY, "image_size": None, "num_classes": None},
        "deq": {"solver": "anderson", "tol": 1e-2, "max_iter": 15},
        "data": {"path": str(data_path), "test_fraction": 0.25, "split_seed": 0},
        "train": {"epochs": 2, "batch_size": 16, "lr": 5e-3, "seed": 0, "target_accuracy": 0.6,
                  "progress": False, "device": "cpu"},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path




@pytest.fixture(scope="module")
def pattern_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pattern_images(64).save(tmp_path_factory.mktemp("pattern") / "images.npz")


# --------------------------------------------------------------------------- model
def test_default_model_has_64842_parameters() -> None:
    model = DEQConvClassifier()
    assert model.num_parameters() == 64_842
    # stem 3*48*9 + 48 + BN 96; layer 2 * 48*64*9 + GN 128 + 96 + 96; head BN 96 + 48*16*10 + 10
    assert 1344 + 96 + 2 * 27648 + 320 + 96 + 7690 == 64_842
    assert DEQConvClassifier(layer="post_injection").num_parameters() == 64_842
    with torch.no_grad():
        logits = DEQConvClassifier().eval()(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)


@pytest.mark.parametrize("name, classes", [("dipole", 2), ("cifar10", 10), ("qmof", 3), ("bandgap", 3)])
def test_image_presets_are_valid(name: str, classes: int) -> None:
    from dequiformer.config import load_config
    from dequiformer.classify.config import resolve_image_config as resolve_config

    cfg = resolve_config(load_config(Path(__file__).resolve().parents[1] / "configs" / "images" / f"{name}.yaml"))
    assert cfg["model"]["num_classes"] == classes and cfg["data"]["path"]
    model_cfg = {**cfg["model"], "in_channels": cfg["model"]["in_channels"] or 3}
    model = DEQConvClassifier.from_config(model_cfg, cfg["deq"])
    assert model.num_parameters() == 64_842 - (10 - classes) * (48 * 16 + 1)  # only the head's outputs differ


def test_bad_config_and_input_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['chanels'\] in model"):
        DEQConvClassifier.from_config({"chanels": 8})
    with pytest.raises(ValueError, match="deq.solver"):
        DEQConvClassifier.from_config({}, {"solver": "newton"})
    with pytest.raises(ValueError, match="num_groups"):
        DEQConvClassifier(channels=10)
    with pytest.raises(ValueError, match="expected images"):
        DEQConvClassifier(**TINY, image_size=8)(torch.rand(1, 3, 16, 16))


def test_anderson_needs_fewer_evaluations_than_forward() -> None:
    torch.manual_seed(0)
    model = DEQConvClassifier(**TINY, image_size=8, num_classes=2).double().eval()
    images = torch.rand(4, 3, 8, 8, dtype=torch.float64)
    nfe = {}
    for solver in ("anderson", "forward"):
        model.configure_solver(solver=solver, tol=1e-4, max_iter=200)
        with torch.no_grad():
            model(images)
        stats = model.last_stats
        assert bool(stats.converged.all()) and float(stats.residual.max()) < 1e-4
        assert stats.steps.shape == (4,)
        nfe[solver] = stats.nfe
    assert nfe["anderson"] < nfe["forward"], nfe


def test_ift_gradient_matches_unrolled_autograd() -> None:
    torch.manual_seed(1)
    model = DEQConvClassifier(**TINY, image_size=8, num_classes=2).double().eval()
    model.configure_solver(solver="anderson", tol=1e-12, max_iter=300, b_tol=1e-12, b_max_iter=300)
    images = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    params = list(model.parameters())
    loss = model(images).square().sum()
    g_ift = torch.autograd.grad(loss, params)
    assert model.last_stats.backward["converged"] == [True] * 3

    x = model.inject(images)  # unrolled: plain iteration to (numerical) convergence, autograd through all
    z = torch.zeros_like(x)
    for _ in range(800):  # the slowest image contracts by ~0.95 per step
        z = model.layer(z, x)
    g_unrolled = torch.autograd.grad(model.head(z).square().sum(), params)
    err = sum((a - b).square().sum() for a, b in zip(g_ift, g_unrolled)).sqrt()
    ref = sum(b.square().sum() for b in g_unrolled).sqrt()
    assert float(err / ref) < 1e-5


# --------------------------------------------------------------------------- training
def test_short_training_beats_chance(tmp_path: Path, pattern_npz: Path) -> None:
    cfg = yaml.safe_load(write_config(tmp_path, pattern_npz, train={"epochs": 4}).read_text())
    summary = train_classifier(cfg, tmp_path / "run", log=lambda _: None)
    assert summary["epochs"] == 4 and summary["parameters"] < 5000
    assert summary["train_acc"] >= 0.8 and summary["test_acc"] >= 0.75, summary["history"]
    assert summary["mean_f_evals"] > 1 and summary["mean_b_evals"] > 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"train_acc", "test_acc", "train_loss", "test_loss", "mean_f_evals", "train_seconds"} <= set(rows[0])
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 1000
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run").glob(".*tmp*"))


def _write_cifar(folder: Path, n: int = 6) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)


def test_cifar10_layout_trains_one_step(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py")
    splits = load_image_splits({"path": str(tmp_path / "cifar-10-batches-py"), "format": "cifar10"})
    assert splits.train_x.shape == (30, 3, 32, 32) and splits.test_x.shape == (6, 3, 32, 32)
    assert splits.class_names[3] == "c3"
    cfg = {"model": {"channels": 8, "inner_channels": 8, "num_groups": 2},
           "deq": {"max_iter": 5},
           "data": {"path": str(tmp_path), "augment": True},  # the folder holding cifar-10-batches-py
           "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 1, "progress": False, "device": "cpu"}}
    summary = train_classifier(cfg, tmp_path / "run", log=lambda _: None)
    assert summary["epochs"] == 1 and summary["history"][0]["mean_f_evals"] >= 2
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["config"]["model"]["num_classes"] == 10 and ckpt["config"]["model"]["image_size"] == [32, 32]


# --------------------------------------------------------------------------- CLI
def test_cli_train_predict_bench(tmp_path: Path, pattern_npz: Path) -> None:
    config = write_config(tmp_path, pattern_npz, train={"epochs": 1})
    run_dir = tmp_path / "run"
    assert climain.main(["classify", "train", str(config), "--run-dir", str(run_dir),
                         "--set", "train.lr=2.0e-3", "--json", str(tmp_path / "train.json")]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["epochs"] == 1 and 0.0 <= report["train_acc"] <= 1.0 and report["solver"] == "anderson"
    ckpt = torch.load(run_dir / "best.pt", weights_only=False)
    assert ckpt["config"]["train"]["lr"] == 2e-3 and ckpt["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "rng", "history", "class_names"} <= set(ckpt)

    assert climain.main(["classify", "predict", str(config), "--run-dir", str(run_dir), "--split", "all",
                         "--out", str(tmp_path / "pred.csv"), "--json", str(tmp_path / "pred.json")]) == 0
    pred = json.loads((tmp_path / "pred.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert pred["n"] == len(rows) == 64 and 0.0 <= pred["accuracy"] <= 1.0
    assert {"id", "label", "pred", "pred_name", "prob_red_top", "prob_blue_bottom", "solver_steps"} <= set(rows[0])
    assert abs(float(rows[0]["prob_red_top"]) + float(rows[0]["prob_blue_bottom"]) - 1.0) < 1e-4
    # a checkpoint as the positional argument: its own config (test split by default)
    assert climain.main(["classify", "predict", str(run_dir / "last.pt"), "--json", str(tmp_path / "p2.json")]) == 0
    assert json.loads((tmp_path / "p2.json").read_text())["n"] == 16

    assert climain.main(["classify", "bench", str(config), "--run-dir", str(tmp_path / "bench"),
                         "--set", "train.target_accuracy=0.01", "--json", str(tmp_path / "bench.json")]) == 0
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert [r["solver"] for r in bench["rows"]] == ["anderson", "forward"]
    for row in bench["rows"]:
        assert {"solver", "epochs", "train_acc", "test_acc", "seconds", "seconds_to_target", "mean_f_evals"} <= set(row)
        assert row["epochs"] == 1 and row["seconds_to_target"] is not None and row["mean_f_evals"] > 1
    a = torch.load(tmp_path / "bench" / "anderson" / "last.pt", weights_only=False)
    assert a["config"]["deq"]["solver"] == "anderson"


def test_cli_resume_continues_identically(tmp_path: Path, pattern_npz: Path) -> None:
    config = write_config(tmp_path, pattern_npz, train={"epochs": 2})
    cfg = yaml.safe_load(config.read_text())
    straight = train_classifier(cfg, tmp_path / "straight", log=lambda _: None)

    def crash_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_classifier(cfg, tmp_path / "resumed", log=crash_after_first_epoch)
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["epoch"] == 1
    assert climain.main(["classify", "train", str(config), "--run-dir", str(tmp_path / "resumed"), "--resume",
                         "--json", str(tmp_path / "resumed.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert resumed["epochs"] == 2 and len(resumed["history"]) == 2
    assert resumed["train_acc"] == pytest.approx(straight["train_acc"], abs=1e-6)
    w1 = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    w2 = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(w1[k].float(), w2[k].float(), atol=1e-6) for k in w1)


def test_cli_missing_data_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere" / "images.npz"
    config = write_config(tmp_path, missing)
    assert climain.main(["classify", "train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "data.path" in err and str(missing) in err
    assert climain.main(["classify", "train", str(config), "--set", "data.pth=x"]) == 2
    assert "unknown key(s) ['pth'] in data" in capsys.readouterr().err


def test_radius_penalty_makes_the_conv_layer_more_contractive() -> None:
    from dequiformer.deq.diagnostics import jacobian_spectral_radius

    torch.manual_seed(0)
    model = DEQConvClassifier(**{**TINY, "init_std": 0.3}, image_size=8, num_classes=2, tol=1e-6, max_iter=60,
                              radius_reg=1.0, radius_target=0.1).double()
    images = torch.rand(4, 3, 8, 8, dtype=torch.float64)

    def radius() -> float:
        model.eval()
        with torch.no_grad():
            x = model.inject(images)
            z = model.solve(x)
        return float(jacobian_spectral_radius(lambda v: model.layer(v, x), z, iters=20).max())

    before = radius()
    opt = torch.optim.Adam(model.layer.parameters(), lr=1e-2)
    for _ in range(20):
        model.train()
        model(images)
        opt.zero_grad()
        model.radius_loss.backward()
        opt.step()
    assert radius() < 0.7 * before
    model.eval()
    model(images)
    assert model.radius_loss is None  # only in training
