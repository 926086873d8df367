"""Every force-field preset in configs/ loads, validates and builds a model; Table 3 values."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dequiformer import build_model, load_config
from dequiformer.train.settings import check_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAMILIES = ("md17", "md22", "oc20", "demo")  # configs/images/ holds classifier presets, tested elsewhere
FILES = sorted(p for family in FAMILIES for p in (CONFIGS / family).rglob("*.yaml"))
MD17 = ("aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic_acid", "toluene", "uracil")
MD22 = ("ac_ala3_nhme", "dha", "stachyose", "at_at", "at_at_cg_cg", "buckyball_catcher", "double_walled_nanotube")
VARIANTS = {"": ("dequiformer", 1), "deq2": ("dequiformer", 2), "equiformer_v2_1": ("equiformer_v2", 1),
            "equiformer_v2_4": ("equiformer_v2", 4), "equiformer_v2_8": ("equiformer_v2", 8)}
SHRINK = dict(sphere_channels=8, attn_hidden_channels=8, num_heads=2, attn_alpha_channels=4, attn_value_channels=4,
              ffn_hidden_channels=8, edge_channels=8, num_radial_basis=8, grid_resolution=None)


def test_presets_exist():
    names = {str(p.relative_to(CONFIGS)) for p in FILES}
    for family, molecules in (("md17", MD17), ("md22", MD22)):
        for mol in molecules:
            for variant in VARIANTS:
                assert str(Path(family, variant, f"{mol}.yaml")) in names
    for variant in (*VARIANTS, "equiformer_v2_14"):
        assert str(Path("oc20", variant, "s2ef_200k.yaml")) in names
    assert {"demo/deq.yaml", "demo/explicit8.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_and_validates(path):
    cfg = load_config(path, ["train.epochs=2"])
    check_config(cfg)
    assert cfg["train"]["epochs"] == 2
    if path.name != "base.yaml":
        assert cfg["data"].get("path"), "data.path must name the data file"
        family_dir = path.parent.name in ("md17", "md22", "oc20")
        if family_dir or path.parent.parent.name in ("md17", "md22", "oc20"):
            variant = "" if family_dir else path.parent.name
            name, layers = {**VARIANTS, "equiformer_v2_14": ("equiformer_v2", 14)}[variant]
            assert (cfg["model"]["name"], cfg["model"]["num_layers"]) == (name, layers)


IGNORED = ("avg_num_nodes", "avg_degree", "cutoff", "max_neighbors")  # no effect on the modules built


def _signature(model_cfg: dict) -> tuple:
    from dequiformer.models.hparams import resolve

    return tuple(sorted((k, str(v)) for k, v in resolve(model_cfg).items() if k not in IGNORED))


def test_every_preset_builds_a_model():
    """Every preset's model at reduced width and at most 2 blocks (stacked blocks are identical
    modules), one build per distinct architecture."""
    seen: dict[tuple, str] = {}
    for path in FILES:
        cfg = load_config(path)
        model_cfg = {**cfg["model"], **SHRINK, "num_layers": min(cfg["model"]["num_layers"], 2)}
        for key in ("avg_num_nodes", "avg_degree"):
            if model_cfg.get(key, 1.0) == "auto":
                model_cfg[key] = 10.0
        sig = _signature(model_cfg)
        if sig in seen:
            continue
        seen[sig] = str(path)
        model = build_model(model_cfg, cfg["deq"])
        assert len(model.blocks) == model_cfg["num_layers"], path
        assert model.cutoff == float(cfg["model"]["cutoff"])
    print(f"{len(seen)} distinct architectures: {sorted(seen.values())}")
    assert len(seen) >= 4


def test_full_size_dequiformer_preset_runs():
    from ase.build import molecule

    from dequiformer.data.graph import AtomicGraph

    torch.manual_seed(0)
    cfg = load_config(CONFIGS / "md17" / "aspirin.yaml")
    model = build_model(cfg["model"], cfg["deq"]).eval()
    assert model.deq_cfg["max_iter"] == 40 and model.deq_cfg["fp_correction"]["states"] == 3
    graph = AtomicGraph.from_atoms(molecule("H2O"), cutoff=model.cutoff, max_neighbors=model.max_neighbors)
    with torch.no_grad():
        out = model(graph, max_iter=3)
    assert out["forces"].shape == (3, 3) and torch.isfinite(out["energy"]).all()


def test_table3_hyperparameters():
    md = load_config(CONFIGS / "md17" / "aspirin.yaml")
    m, t, d = md["model"], md["train"], md["deq"]
    assert (m["lmax"], m["mmax"], m["sphere_channels"], m["attn_hidden_channels"], m["num_heads"]) == (3, 2, 128, 64, 8)
    assert (m["attn_alpha_channels"], m["attn_value_channels"], m["ffn_hidden_channels"], m["edge_channels"]) == (64, 16, 128, 128)
    assert (m["num_radial_basis"], m["grid_resolution"], m["cutoff"], m["max_neighbors"]) == (128, 14, 5.0, 500)
    assert (m["alpha_drop"], m["path_drop"]) == (0.0, 0.05)
    assert (t["warmup_lr"], t["lr"], t["min_lr"], t["warmup_epochs"], t["epochs"], t["batch_size"]) == (1e-6, 5e-4, 1e-6, 10, 1000, 4)
    assert (t["force_loss"], t["force_weight"], t["energy_loss"], t["energy_weight"]) == ("l2mae", 80, "l2mae", 1)
    assert (t["weight_decay"], t["clip_grad_norm"]) == (5e-3, 1000)
    assert (d["solver"], d["max_iter"], d["tol"], d["reuse_tol"], d["fp_correction"]["states"]) == ("anderson", 40, 1e-4, 1e-1, 3)
    assert md["data"]["path"] == "data/md17/md17_aspirin.npz" and md["data"]["n_train"] == 950
    oc = load_config(CONFIGS / "oc20" / "s2ef_200k.yaml")
    m, t = oc["model"], oc["train"]
    assert (m["cutoff"], m["max_neighbors"], m["lmax"], m["mmax"]) == (12.0, 20, 3, 2)
    assert (t["warmup_lr"], t["lr"], t["min_lr"], t["warmup_epochs"], t["epochs"]) == (4e-5, 2e-4, 2e-6, 0.1, 6)
    assert (t["force_loss"], t["force_weight"], t["energy_loss"], t["energy_weight"]) == ("l2mae", 100, "mae", 2)
    assert (t["weight_decay"], t["clip_grad_norm"]) == (1e-3, 100)
    md22 = load_config(CONFIGS / "md22" / "buckyball_catcher.yaml")
    assert md22["data"]["path"] == "data/md22/md22_buckyball-catcher.npz" and md22["data"]["n_train"] == 600


def test_misspelt_sections_bad_deq_values_and_yaml_floats(tmp_path):
    from dequiformer.config import load_config
    from dequiformer.models.dequiformer import resolve_deq

    bad = tmp_path / "bad.yaml"
    bad.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ValueError, match=r"unknown config section\(s\) \['trian'\]"):
        load_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 1e-4\n")
    cfg = load_config(good, ["deq.tol=1e-3", "train.min_lr=1E-6"])
    assert cfg["train"]["lr"] == 1e-4 and cfg["deq"]["tol"] == 1e-3 and cfg["train"]["min_lr"] == 1e-6
    for key, value in (("tol", -1.0), ("b_tol", 0), ("max_iter", 0), ("reuse_tol", "1e-2x")):
        with pytest.raises(ValueError, match=f"deq.{key} must be"):
            resolve_deq({key: value})


def test_malformed_yaml_devices_solver_options_and_reader_options_are_named(tmp_path):
    from dequiformer.config import load_config
    from dequiformer.classify.config import resolve_image_config
    from dequiformer.models.deq_conv import DEQConvClassifier
    from dequiformer.models.dequiformer import resolve_deq
    from dequiformer.train.settings import resolve_train

    broken = tmp_path / "broken.yaml"
    broken.write_text("model: {name: [dequiformer\n")
    with pytest.raises(ValueError, match=r"broken.yaml: malformed YAML \(line 2"):
        load_config(broken)
    good = tmp_path / "good.yaml"
    good.write_text("train: {}\n")
    with pytest.raises(ValueError, match=r"override 'train.lr=\[1': malformed YAML"):
        load_config(good, ["train.lr=[1"])
    with pytest.raises(ValueError, match="train.device must be auto, cpu, cuda, cuda:K or mps, got 'tpu'"):
        resolve_train({"device": "tpu"})
    assert resolve_train({"device": "cuda:1"})["device"] == "cuda:1"
    # per-solver options: Broyden's memory and forward iteration's damping are settable and checked
    cfg = resolve_deq({"solver": "broyden", "broyden": {"memory": 7}, "forward": {"damping": 0.3}})
    assert cfg["broyden"] == {"memory": 7} and cfg["forward"] == {"damping": 0.3} and cfg["anderson"]["m"] == 5
    with pytest.raises(ValueError, match=r"deq.broyden.memory must be an integer >= 1, got 0"):
        resolve_deq({"broyden": {"memory": 0}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['beta'\] in deq.forward"):
        resolve_deq({"forward": {"beta": 0.5}})
    with pytest.raises(ValueError, match="deq.solver must be one of 'anderson', 'broyden', 'forward', got 'newton'"):
        resolve_deq({"solver": "newton"})
    assert DEQConvClassifier._solver_kwargs({"solver": "forward", "forward": {"damping": 0.2},
                                             "anderson": {"m": 5}}) == {"damping": 0.2}
    # the conv classifier reads the same per-solver options; the flat keys of earlier configs are named
    conv = DEQConvClassifier.from_config({}, {"solver": "forward", "forward": {"damping": 0.3}, "tol": "1e-3"})
    assert conv.deq["forward"] == {"damping": 0.3} and conv.deq["anderson"]["m"] == 5 and conv.deq["tol"] == 1e-3
    with pytest.raises(ValueError, match=r"deq.m is a per-solver option now: set deq.anderson.m"):
        conv.configure_solver(m=3)
    with pytest.raises(ValueError, match=r"deq.lam is a per-solver option now: set deq.anderson.lam"):
        resolve_image_config({"deq": {"lam": 1e-3}})  # the config path names it too
    with pytest.raises(ValueError, match=r"deq.anderson.m must be an integer >= 1, got 0"):
        DEQConvClassifier.from_config({}, {"anderson": {"m": 0}})


def test_unknown_reader_option_names_the_file_and_option(tmp_path):
    from dequiformer.data.readers import read_dataset
    from dequiformer.data.readers import UnknownReaderOption

    path = tmp_path / "x.npz"
    np.savez(path, R=np.zeros((2, 3, 3)), z=np.array([1, 1, 8]), E=np.zeros(2), F=np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match=r"x.npz: reader 'md17' does not accept option\(s\) \['energyy_key'\]"):
        read_dataset(path, energyy_key="E")
    assert issubclass(UnknownReaderOption, TypeError)


def test_one_schema_coerces_and_names_every_bad_value():
    from dequiformer.schema import MISSING, Option, resolve_section

    schema = {"lr": Option(1e-3, float, low=0.0), "epochs": Option(3, int, low=1),
              "mode": Option("a", str, choices=("a", "b")), "opt": Option(MISSING, int, nullable=True),
              "inner": Option(None, dict, fields={"k": Option(2, int, low=1)})}
    out = resolve_section("train", {"lr": "1e-4", "inner": {"k": 5}}, schema)
    assert out == {"lr": 1e-4, "epochs": 3, "mode": "a", "inner": {"k": 5}}  # MISSING stays absent
    assert resolve_section("train", None, schema)["inner"] == {"k": 2}
    for given, message in (({"epochs": True}, "train.epochs must be an integer >= 1, got True"),
                           ({"epochs": 2.5}, "train.epochs must be an integer >= 1, got 2.5"),
                           ({"lr": "fast"}, "train.lr must be a number >= 0, got 'fast'"),
                           ({"mode": "c"}, "train.mode must be one of 'a', 'b', got 'c'"),
                           ({"inner": {"k": 0}}, "train.inner.k must be an integer >= 1, got 0"),
                           ({"inner": {"j": 1}}, r"unknown key\(s\) \['j'\] in train.inner"),
                           ({"epochs": None}, "train.epochs must be an integer >= 1, got None")):
        with pytest.raises(ValueError, match=message):
            resolve_section("train", given, schema)
