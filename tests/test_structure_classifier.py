"""Structure route of ``dequiformer classify``: DEQuiformer with a graph-level classification head.

Data: small molecules of ASE's G2 set labelled "contains oxygen" (cheap and learnable
from the atoms alone), written to an extxyz file; the model is shrunk (lmax 1, 16
channels). The generator test runs GFN2-xTB on four molecules.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule
from ase.collections import g2

from dequiformer.classify.splits import load_image_splits, load_structure_splits, read_labelled_structures, split_indices
from dequiformer.classify.structures import train_structure_classifier
from dequiformer.cli import main as climain
from dequiformer.imaging.image_dataset import ImageDataset

climain.COMMANDS.setdefault("classify", ("dequiformer.cli.classify", "graph-image classifiers"))
ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL = dict(
    name="dequiformer", task="classification", num_classes=None, lmax=1, mmax=1, sphere_channels=16,
    attn_hidden_channels=16, num_heads=2, attn_alpha_channels=4, attn_value_channels=4, ffn_hidden_channels=32,
    edge_channels=16, num_radial_basis=8, cutoff=3.0, max_neighbors=12, max_num_elements=20, alpha_drop=0.0,
    path_drop=0.0, grid_resolution=10,
)
TINY_DEQ = {"max_iter": 6, "tol": 1e-3, "b_max_iter": 6, "fp_correction": {"states": 1, "weight": 0.8}}


def _has_oxygen_set(n: int) -> list:
    """``n`` G2 molecules with at most 8 atoms, balanced between with / without oxygen."""
    small = [name for name in g2.names if len(molecule(name)) <= 8 and max(molecule(name).numbers) < 20]
    with_o = [name for name in small if 8 in molecule(name).numbers]
    without = [name for name in small if 8 not in molecule(name).numbers]
    names = [x for pair in zip(with_o, without) for x in pair][:n]
    frames = []
    for name in names:
        atoms = molecule(name)
        atoms.info.update(id=f"g2:{name}", label=int(8 in atoms.numbers),
                          label_name="oxygen" if 8 in atoms.numbers else "no_oxygen")
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def oxygen_xyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oxy") / "structures.extxyz"
    ase.io.write(str(path), _has_oxygen_set(40), format="extxyz")
    return path


def _cfg(path: Path, **train: object) -> dict:
    return {"model": dict(TINY_MODEL), "deq": dict(TINY_DEQ),
            "data": {"path": str(path), "test_fraction": 0.25, "split_seed": 0},
            "train": {"epochs": 8, "batch_size": 5, "lr": 3e-3, "seed": 0, "device": "cpu", "progress": False,
                      **train}}


def test_training_beats_chance(tmp_path: Path, oxygen_xyz: Path) -> None:
    summary = train_structure_classifier(_cfg(oxygen_xyz), tmp_path / "run", log=lambda _: None)
    assert summary["route"] == "structure" and summary["solver"] == "anderson" and summary["epochs"] == 8
    assert summary["history"][-1]["train_acc"] >= 0.75, [r["train_acc"] for r in summary["history"]]
    assert summary["mean_f_evals"] > 1 and summary["mean_b_evals"] > 0
    assert summary["history"][0]["correction_loss"] > 0  # fixed-point correction term is trained
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert len(rows) == 8 and {"train_acc", "test_acc", "train_loss", "mean_steps", "train_seconds"} <= set(rows[0])
    for name in ("last.pt", "best.pt", "confusion_matrix.png", "confusion_matrix.csv", "summary.json"):
        assert (tmp_path / "run" / name).is_file(), name
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["class_names"] == ["no_oxygen", "oxygen"] and ckpt["config"]["model"]["num_classes"] == 2
    assert ckpt["config"]["model"]["avg_degree"] > 0 and {"rng", "optimizer", "scheduler"} <= set(ckpt)


def test_cli_train_resume_predict(tmp_path: Path, oxygen_xyz: Path) -> None:
    cfg = _cfg(oxygen_xyz, epochs=2, max_steps_per_epoch=2)
    config = tmp_path / "oxy.yaml"
    config.write_text(yaml.safe_dump(cfg))
    straight = tmp_path / "straight"
    assert climain.main(["classify", "train", str(config), "--run-dir", str(straight), "--json",
                         str(tmp_path / "train.json")]) == 0
    report = json.loads((tmp_path / "train.json").read_text())
    assert report["epochs"] == 2 and report["model"] == "dequiformer" and 0.0 <= report["test_acc"] <= 1.0

    def crash_after_first_epoch(message: str) -> None:
        if message.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_structure_classifier(cfg, run_dir, log=crash_after_first_epoch)
    assert climain.main(["classify", "train", str(config), "--run-dir", str(run_dir), "--resume",
                         "--json", str(tmp_path / "resumed.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert [r["epoch"] for r in resumed["history"]] == [1, 2]
    assert resumed["train_acc"] == pytest.approx(report["train_acc"], abs=1e-6)
    w1 = torch.load(straight / "last.pt", weights_only=False)["model"]
    w2 = torch.load(run_dir / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(w1[k], w2[k], atol=1e-5) for k in w1)

    assert climain.main(["classify", "predict", str(config), "--run-dir", str(run_dir), "--split", "all",
                         "--out", str(tmp_path / "pred.csv"), "--json", str(tmp_path / "pred.json")]) == 0
    pred = json.loads((tmp_path / "pred.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert pred["n"] == len(rows) == 40 and 0.0 <= pred["accuracy"] <= 1.0 and pred["solver"] == "anderson"
    assert {"id", "label", "pred_name", "prob_oxygen", "prob_no_oxygen", "solver_steps"} <= set(rows[0])
    assert rows[0]["id"].startswith("g2:") and int(rows[0]["solver_steps"]) >= 1
    # a checkpoint as the positional argument uses its own config (test split: 10 structures)
    assert climain.main(["classify", "predict", str(run_dir / "last.pt"), "--json", str(tmp_path / "p2.json")]) == 0
    assert json.loads((tmp_path / "p2.json").read_text())["n"] == 10


def test_missing_label_names_file_and_frame(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    frames = _has_oxygen_set(4)
    del frames[2].info["label"]
    path = tmp_path / "broken.extxyz"
    ase.io.write(str(path), frames, format="extxyz")
    with pytest.raises(ValueError, match=r"broken\.extxyz: frame 2 \(id g2:\S+\) has no class label"):
        read_labelled_structures(path)
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(_cfg(path)))
    assert climain.main(["classify", "train", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "frame 2" in err and str(path) in err and "info['label']" in err
    bad = _cfg(path)
    del bad["model"]["task"]
    with pytest.raises(ValueError, match="model.task must be 'classification'"):
        train_structure_classifier(bad, tmp_path / "run2", log=lambda _: None)


def _generator_module():
    spec = importlib.util.spec_from_file_location("generate_dipole_images",
                                                  ROOT / "datasets" / "generate_dipole_images.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generator_writes_aligned_structures(tmp_path: Path) -> None:
    out = tmp_path / "dip"
    assert _generator_module().main(["--n", "5", "--out", str(out), "--seed", "1", "--workers", "1", "--quiet",
                                     "--size", "16"]) == 0
    images = ImageDataset.load(out / "images.npz")
    frames, labels, ids, names = read_labelled_structures(out / "structures.extxyz")
    assert ids == images.ids and np.array_equal(labels, images.labels)
    dip = np.array([a.info["dipole_debye"] for a in frames])
    assert np.allclose(dip, images.metadata["dipoles_debye"], atol=1e-5)
    assert all(names[k] == images.class_names[k] for k in names)
    rows = list(csv.DictReader(open(out / "molecules.csv")))
    assert [len(a) for a in frames] == [int(r["n_atoms"]) for r in rows]
    # both routes split the same file order the same way: identical test molecules
    image_splits = load_image_splits({"path": str(out / "images.npz"), "test_fraction": 0.4, "split_seed": 2})
    structure_splits = load_structure_splits({"path": str(out / "structures.extxyz"), "test_fraction": 0.4,
                                              "split_seed": 2, "class_names": images.class_names}, 4.0, None)
    assert structure_splits.test_ids == image_splits.test_ids and structure_splits.train_ids == image_splits.train_ids
    assert torch.equal(structure_splits.test_y, image_splits.test_y)
    train, test = split_indices(5, 0.4, 2)
    assert len(test) == 2 and sorted([*train, *test]) == list(range(5))


def test_bench_and_explicit_model(tmp_path: Path, oxygen_xyz: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "oxy.yaml"
    config.write_text(yaml.safe_dump(_cfg(oxygen_xyz, epochs=1, max_steps_per_epoch=1)))
    assert climain.main(["classify", "bench", str(config), "--run-dir", str(tmp_path / "bench"),
                         "--json", str(tmp_path / "bench.json")]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["solver"] for r in rows] == ["anderson", "forward"] and all(r["mean_f_evals"] > 1 for r in rows)
    # the explicit EquiformerV2 trains on the same route (no solver: steps = blocks) but has nothing to bench
    explicit = _cfg(oxygen_xyz, epochs=1, max_steps_per_epoch=1)
    explicit["model"].update(name="equiformer_v2", num_layers=2)
    summary = train_structure_classifier(explicit, tmp_path / "explicit", log=lambda _: None)
    assert summary["solver"] == "explicit" and summary["mean_steps"] == 2
    config.write_text(yaml.safe_dump(explicit))
    assert climain.main(["classify", "bench", str(config), "--run-dir", str(tmp_path / "b2")]) == 2
    assert "no fixed-point solver" in capsys.readouterr().err


def test_dipole_3d_preset_builds() -> None:
    from dequiformer.config import load_config
    from dequiformer.classify.config import resolve_structure_config, uses_structure_route
    from dequiformer.models import build_model

    cfg = load_config(ROOT / "configs" / "images" / "dipole_3d.yaml")
    image_cfg = load_config(ROOT / "configs" / "images" / "dipole.yaml")
    assert uses_structure_route(cfg) and not uses_structure_route(image_cfg)
    resolved = resolve_structure_config(cfg)
    for key in ("test_fraction", "split_seed"):  # same test molecules as the image preset
        assert resolved["data"][key] == image_cfg["data"][key]
    model = build_model({**resolved["model"], "avg_degree": 10.0}, resolved["deq"])
    assert model.task == "classification" and model.hparams["num_layers"] == 1 and model.hparams["lmax"] == 2
    # the crystal pair: three classes, the same compound split on both routes
    crystal = resolve_structure_config(load_config(ROOT / "configs" / "images" / "crystal_gap_3d.yaml"))
    crystal_images = load_config(ROOT / "configs" / "images" / "crystal_gap.yaml")
    assert crystal["model"]["num_classes"] == 3 and len(crystal["data"]["class_names"]) == 3
    for key in ("test_fraction", "split_seed", "split_group"):
        assert crystal["data"][key] == crystal_images["data"][key]
    build_model({**crystal["model"], "avg_degree": 10.0}, crystal["deq"])


def test_class_logits_are_rotation_invariant() -> None:
    # the head reads the length of the summed l = 1 features as well as the mean l = 0 ones
    from scipy.spatial.transform import Rotation

    from dequiformer.data.graph import AtomicGraph
    from dequiformer.models import build_model

    torch.manual_seed(0)
    model = build_model({**TINY_MODEL, "num_classes": 3, "avg_degree": 3.0},
                        {**TINY_DEQ, "tol": 1e-8, "max_iter": 60}).double().eval()
    atoms = molecule("CH3CH2OH")
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix().T + 0.7
    logits = [model(AtomicGraph.from_atoms(a, cutoff=3.0, dtype=torch.float64))["logits"] for a in (atoms, rotated)]
    assert logits[0].shape == (1, 3)
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-6)


def test_group_split_keeps_each_compound_on_one_side(tmp_path: Path) -> None:
    from dequiformer.classify.splits import group_names

    ids = [f"{proto}:{formula}:s{s}" for proto, formula in [("fcc", "Cu"), ("fcc", "Ag"), ("rocksalt", "MgO"),
                                                             ("rocksalt", "NaCl"), ("diamond", "Si")]
           for s in (0.98, 1.0, 1.02)]
    groups = group_names(ids, r"^[^:]+:[^:]+")
    assert groups[:3] == ["fcc:Cu"] * 3
    for seed in range(5):
        train, test = split_indices(len(ids), 0.3, seed, groups)
        assert sorted([*train, *test]) == list(range(len(ids))) and len(test) >= round(0.3 * len(ids))
        assert not {groups[i] for i in train} & {groups[i] for i in test}
    # the regex's first parenthesised group names the group when it has one: the formula here
    assert group_names(ids, r":([^:]+):")[3] == "Ag"
    with pytest.raises(ValueError, match="does not match the id 'odd'"):
        group_names(["fcc:Cu:s1", "odd"], r"^[^:]+:[^:]+")
    # the image route reads the key from its config and refuses a sample id the pattern misses
    images = ImageDataset(np.zeros((len(ids), 8, 8, 3), np.uint8), np.arange(len(ids)) % 2, ["a", "b"], ids=ids)
    images.save(tmp_path / "x.npz")
    splits = load_image_splits({"path": str(tmp_path / "x.npz"), "test_fraction": 0.3, "split_group": r"^[^:]+:[^:]+"})
    assert not {i.rsplit(":", 1)[0] for i in splits.train_ids} & {i.rsplit(":", 1)[0] for i in splits.test_ids}
