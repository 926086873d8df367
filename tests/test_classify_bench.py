"""``dequiformer classify bench``: the report's fields, the residual traces and the PNG.

Tiny random images (a colour pattern decides the class, as in ``test_deq_conv``), a shrunk
model (8 channels) and one epoch, so the whole file runs in seconds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dequiformer.classify.bench import EPOCH_SERIES, bench_solvers, crossover_seconds, plateau, residual_trace
from dequiformer.cli import main as climain
from dequiformer.imaging.image_dataset import ImageDataset
from dequiformer.models.deq_conv import DEQConvClassifier

climain.COMMANDS.setdefault("classify", ("dequiformer.cli.classify", "graph-image classifiers"))

TINY = {"channels": 8, "inner_channels": 8, "num_groups": 2, "pool_size": 4}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 images 8 x 8: class 0 red top half, class 1 blue bottom half, noise elsewhere."""
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = rng.integers(0, 90, size=(40, 8, 8, 3)).astype(np.uint8)
    images[labels == 0, :4, :, 0] += 150
    images[labels == 1, 4:, :, 2] += 150
    ds = ImageDataset(images, labels, ["red_top", "blue_bottom"], [f"img{i}" for i in range(40)])
    return ds.save(tmp_path_factory.mktemp("tiny") / "images.npz")


def tiny_cfg(data: Path, epochs: int = 1) -> dict:
    return {"model": {"name": "deq_conv", **TINY, "image_size": None, "num_classes": None},
            "deq": {"solver": "anderson", "tol": 1e-2, "max_iter": 8},
            "data": {"path": str(data), "test_fraction": 0.25, "split_seed": 0},
            "train": {"epochs": epochs, "batch_size": 10, "lr": 5e-3, "min_lr": 1e-6, "seed": 0,
                      "target_accuracy": 0.01, "progress": False, "device": "cpu", "num_threads": 1}}


ROW_TYPES = {"solver": str, "epochs": int, "train_acc": float, "test_acc": float, "seconds": float,
             "seconds_to_target": float, "mean_f_evals": float, "mean_b_evals": float, "mean_steps": float,
             "converged_fraction": float, "plateau_epochs": int, "plateau_train_acc": float,
             "plateau_test_acc": float, "best_train_acc": float, "best_test_acc": float}


def check_report(report: dict, epochs: int) -> None:
    assert {"rows", "target_accuracy", "tol", "plateau_epochs", "data", "seed", "run_dir", "crossover",
            "figure"} <= set(report)
    assert [r["solver"] for r in report["rows"]] == ["anderson", "forward"]
    for row in report["rows"]:
        for key, kind in ROW_TYPES.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["epochs"] == epochs and row["mean_f_evals"] > 1
        for key in EPOCH_SERIES:  # one value per epoch
            assert len(row[key]) == epochs, key
        assert all(isinstance(v, float) and v >= 1 for v in row["f_evals_per_epoch"])
        assert row["plateau_train_acc"] == pytest.approx(np.mean(row["train_acc_per_epoch"][-3:]))
        assert row["epoch_seconds"][-1] == pytest.approx(row["seconds"])
    crossover = report["crossover"]
    assert {"batch", "source", "tol", "max_iter", "repeats", "runs"} <= set(crossover)
    assert [run["model"] for run in crossover["runs"]] == ["initial", "trained (anderson)"]
    for run in crossover["runs"]:
        assert set(run["curves"]) == {"anderson", "forward"} and set(run["seconds_to_tol"]) == {"anderson", "forward"}
        assert "crossover_seconds" in run
        for curve in run["curves"].values():
            assert len(curve["seconds"]) == len(curve["residual_mean"]) == len(curve["residual_max"]) == curve["nfe"]
    png = Path(report["figure"])
    assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_bench_report_fields_and_figure(tmp_path: Path, tiny_npz: Path) -> None:
    report = bench_solvers(tiny_cfg(tiny_npz), tmp_path / "bench", log=lambda _: None, trace_iters=12)
    check_report(report, epochs=1)
    assert Path(report["figure"]) == tmp_path / "bench" / "bench.png"
    json.dumps(report, allow_nan=False)  # the report is plain JSON


def test_residual_trace_falls_while_time_rises() -> None:
    torch.manual_seed(0)
    model = DEQConvClassifier(**TINY, image_size=8, num_classes=2).eval()
    with torch.no_grad():
        x = model.inject(torch.rand(6, 3, 8, 8))
    for solver, options in (("anderson", {"m": 5, "beta": 1.0, "lam": 1e-4}), ("forward", {})):
        curve = residual_trace(model.layer, x, solver, options, tol=1e-12, max_iter=20, repeats=2)
        seconds, res = curve["seconds"], curve["residual_mean"]
        assert len(seconds) == len(res) == 20 == curve["nfe"] and curve["batch"] == 6
        assert all(b > a for a, b in zip(seconds, seconds[1:]))
        assert res[-1] < 1e-2 * res[0]  # falls by orders of magnitude ...
        assert sum(b <= a for a, b in zip(res, res[1:])) >= 0.8 * (len(res) - 1)  # ... mostly monotonically
        assert all(m <= x + 1e-12 for m, x in zip(curve["residual_mean"], curve["residual_max"]))


def test_crossover_and_plateau_definitions() -> None:
    fast_start = {"seconds": [1.0, 2.0, 3.0, 4.0], "residual_mean": [0.5, 0.2, 0.1, 0.08]}
    accelerated = {"seconds": [1.5, 3.0, 4.5], "residual_mean": [0.6, 0.05, 0.001]}
    # accelerated is above until its second evaluation at 3 s, then below to the end of the shorter curve
    assert crossover_seconds(accelerated, fast_start) == 3.0
    assert crossover_seconds(fast_start, accelerated) is None
    assert plateau([0.1, 0.5, 0.6, 0.7], 3) == pytest.approx(0.6)
    assert plateau([0.5, None], 3) == 0.5 and plateau([None], 3) is None


def test_cli_bench_end_to_end(tmp_path: Path, tiny_npz: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_cfg(tiny_npz)))
    out = tmp_path / "out.json"
    assert climain.main(["classify", "bench", str(config), "--run-dir", str(tmp_path / "bench"),
                         "--set", "train.epochs=2", "--set", "train.batch_size=15", "--trace-iters", "10",
                         "--plateau-epochs", "2", "--figure", str(tmp_path / "fig.png"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    check_report(report, epochs=2)
    assert report["plateau_epochs"] == 2 and report["figure"] == str(tmp_path / "fig.png")
    assert report["crossover"]["max_iter"] == 10 and report["crossover"]["batch"] == 10  # 10 test images
    printed = capsys.readouterr().out
    assert "plateau_tr" in printed and "f evals per batch by epoch" in printed and "fig.png" in printed
