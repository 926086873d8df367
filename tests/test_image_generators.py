"""Offline graph-image generators in datasets/: the dipole pool and the crystal-gap set."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "images"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DATASETS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- dipoles
def test_smiles_pool_has_5000_unique_valid_molecules():
    Chem = pytest.importorskip("rdkit.Chem")
    from dequiformer.imaging.molecules import enumerate_smiles

    pool = enumerate_smiles()
    assert len(pool) >= 5000
    assert len(set(pool)) == len(pool) and pool == sorted(pool)
    for smi in pool[::50]:  # every entry is already canonical and parses
        mol = Chem.MolFromSmiles(smi)
        assert mol is not None and Chem.MolToSmiles(mol) == smi


@pytest.fixture(scope="module")
def dipole_run(tmp_path_factory):
    pytest.importorskip("rdkit")
    pytest.importorskip("tblite.interface")
    gen = load_script("generate_dipole_images")
    out = tmp_path_factory.mktemp("dipole")
    rc = gen.main(["--n", "6", "--workers", "1", "--seed", "3", "--out", str(out), "--quiet"])
    return gen, out, rc


def test_dipole_generator_small_run(dipole_run):
    import ase.io
    from rdkit import Chem

    from dequiformer.imaging.image_dataset import ImageDataset

    gen, out, rc = dipole_run
    assert rc == 0
    for name in ("images.npz", "molecules.csv", "structures.extxyz", "summary.json", "legend.json"):
        assert (out / name).is_file(), name
    ds = ImageDataset.load(out / "images.npz")
    assert len(ds) == 6 and ds.images.shape == (6, 32, 32, 3)
    dipoles = np.array(ds.metadata["dipoles_debye"])
    np.testing.assert_array_equal(ds.labels, (dipoles >= gen.DEFAULT_THRESHOLD).astype(int))
    assert ds.metadata["pool_size"] >= 5000
    with open(out / "molecules.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == ds.ids
    assert [int(r["label"]) for r in rows] == ds.labels.tolist()
    frames = ase.io.read(out / "structures.extxyz", index=":")
    assert [f.info["label"] for f in frames] == ds.labels.tolist()
    smiles = [i.split(":", 1)[1] for i in ds.ids if i.startswith("smiles:")]
    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(s)) for s in smiles]
    assert canonical == smiles and len(set(canonical)) == len(canonical)
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["class_counts"].values()) == 6


def test_dipole_generator_rejects_n_beyond_pool(tmp_path):
    pytest.importorskip("rdkit")
    gen = load_script("generate_dipole_images")
    with pytest.raises(SystemExit, match="larger than the candidate pool"):
        gen.main(["--n", "1000000", "--workers", "1", "--out", str(tmp_path), "--quiet"])
    assert not (tmp_path / "images.npz").exists()


# --------------------------------------------------------------------------- crystals
def test_crystal_pool_and_supercells():
    from dequiformer.imaging.crystals import CrystalSpec, build_primitive, crystal_pool, supercell_repeats

    pool = crystal_pool()
    ids = [s.id for s in pool]
    assert len(pool) >= 300 and len(set(ids)) == len(ids)
    nacl = build_primitive(CrystalSpec("rocksalt", "NaCl"))
    assert nacl.get_chemical_formula() == "ClNa" and nacl.pbc.all()
    assert nacl.get_distance(0, 1, mic=True) == pytest.approx(5.64 / 2, abs=1e-6)
    a, b = supercell_repeats(nacl, min_length=5.0, max_atoms=48)
    assert a == (2, 2, 2) and a != b and len(nacl) * np.prod(b) <= 48
    strained = build_primitive(CrystalSpec("fcc", "Cu", 1.0, (0.01, 0, 0, 0, 0, 0), 0.0, 1))
    assert strained.cell.volume == pytest.approx(build_primitive(CrystalSpec("fcc", "Cu")).cell.volume * 1.01)


def test_frontier_levels_aufbau():
    from dequiformer.imaging.crystals import frontier_levels

    assert frontier_levels(np.array([-2.0, -1.0, 1.0]), np.array([2.0, 2.0, 0.0])) == (-1.0, 1.0, 4)
    # odd electron count: the half-filled level is both HOMO and LUMO (metallic)
    assert frontier_levels(np.array([-2.0, -1.0, 1.0]), np.array([2.0, 1.0, 0.0])) == (-1.0, -1.0, 3)


def test_unknown_prototype_is_named():
    from dequiformer.imaging.crystals import CrystalSpec, build_primitive, crystal_pool

    with pytest.raises(ValueError, match="unknown crystal prototype 'perovskite'"):
        crystal_pool(prototypes=["perovskite"])
    with pytest.raises(ValueError, match="'NaCl' is not in the 'fcc' table"):
        build_primitive(CrystalSpec("fcc", "NaCl"))


def test_crystal_generator_cli_errors(tmp_path, capsys):
    gen = load_script("generate_crystal_gaps")
    with pytest.raises(SystemExit):
        gen.main(["--prototypes", "perovskite", "--out", str(tmp_path)])
    assert "perovskite" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="larger than the crystal pool"):
        gen.main(["--n", "100000", "--out", str(tmp_path), "--quiet"])
    assert not (tmp_path / "images.npz").exists()


@pytest.mark.parametrize("prototype, formula, label", [("fcc", "Cu", 0), ("rocksalt", "NaCl", 2)])
def test_crystal_labels_metal_and_insulator(prototype, formula, label):
    pytest.importorskip("tblite.interface")
    from dequiformer.imaging.crystals import CrystalSpec, build_primitive, supercell_gap

    gen = load_script("generate_crystal_gaps")
    gap = supercell_gap(build_primitive(CrystalSpec(prototype, formula)), "GFN2-xTB", max_atoms=24)
    assert gen.gap_label(gap["gap_ev"]) == label, gap
    assert gap["gap_ev"] <= min(c["gap_ev"] for c in gap["supercells"]) + 1e-12


def test_crystal_generator_writes_loadable_set(tmp_path):
    pytest.importorskip("tblite.interface")
    import yaml

    from dequiformer.classify.config import resolve_image_config
    from dequiformer.classify.splits import load_image_splits, read_labelled_structures
    from dequiformer.imaging.image_dataset import ImageDataset

    gen = load_script("generate_crystal_gaps")
    out = tmp_path / "gaps"
    # small second supercells keep this to a few seconds
    rc = gen.main(["--prototypes", "fcc", "bcc", "--scales", "1.0", "--strained", "0", "--rattled", "0",
                   "--n", "3", "--max-atoms", "12", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("images.npz", "structures.extxyz", "crystals.csv", "summary.json", "legend.json"):
        assert (out / name).is_file(), name
    ds = ImageDataset.load(out / "images.npz")
    assert len(ds) == 3 and ds.class_names == ["metal", "semiconductor", "insulator"]
    assert ds.images.shape == (3, 32, 32, 3) and ds.images.any()
    assert ds.metadata["cutoff_angstrom"] == pytest.approx(3.4)
    np.testing.assert_array_equal(ds.labels, [gen.gap_label(g) for g in ds.metadata["gaps_ev"]])
    frames, labels, ids, names = read_labelled_structures(out / "structures.extxyz")
    assert ids == ds.ids and labels.tolist() == ds.labels.tolist() and all(f.pbc.all() for f in frames)
    # the shipped config reads it as a 3-class image set
    cfg = yaml.safe_load((CONFIGS / "crystal_gap.yaml").read_text())
    cfg["data"]["path"] = str(out / "images.npz")
    cfg["data"]["test_fraction"] = 1 / 3
    cfg = resolve_image_config(cfg)
    assert cfg["model"]["num_classes"] == 3
    splits = load_image_splits(cfg["data"])
    assert splits.class_names == ds.class_names and len(splits.train_y) + len(splits.test_y) == 3
