"""Offline data generators in datasets/: tiny runs, read back with the readers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dequiformer.data.readers import read_dataset
from dequiformer.data.units import KCAL_PER_MOL

DATASETS = Path(__file__).resolve().parents[1] / "datasets"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DATASETS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def xtb_water(tmp_path_factory):
    pytest.importorskip("tblite.ase")
    gen = load_script("generate_xtb_md")
    out = tmp_path_factory.mktemp("xtb") / "water_xtb.npz"
    written = gen.main(["--molecule", "H2O", "--frames", "5", "--equilibrate", "2", "--seed", "3",
                        "--temperature", "300", "--out", str(out), "--quiet"])
    assert written == out
    return out


def test_xtb_md_layout_and_units(xtb_water):
    assert not xtb_water.with_name(xtb_water.name + ".tmp").exists()
    with np.load(xtb_water) as npz:
        assert {"R", "z", "E", "F", "name", "theory"} <= set(npz.files)
        assert npz["R"].shape == (5, 3, 3) and npz["E"].shape == (5, 1) and npz["F"].shape == (5, 3, 3)
        assert str(npz["e_unit"]) == "kcal/mol" and float(npz["dt_fs"]) == 0.5
        assert "GFN2-xTB" in str(npz["theory"])
        R = npz["R"]
    ds = read_dataset(xtb_water)
    assert ds.format == "md17" and ds.units["energy"] == "kcal/mol" and len(ds) == 5
    energies = np.array([f.energy for f in ds])
    assert np.all(np.isfinite(energies))
    # GFN2-xTB water is about -5.07 Hartree = -3180 kcal/mol
    assert -3300 < energies.mean() < -3100
    np.testing.assert_array_equal(ds[0].numbers, [8, 1, 1])
    # consecutive 0.5 fs frames: small but non-zero displacements
    step = np.abs(np.diff(R, axis=0)).max()
    assert 0 < step < 0.1


def test_xtb_forces_match_energy_finite_difference(xtb_water):
    from ase import Atoms
    from tblite.ase import TBLite

    frame = read_dataset(xtb_water)[2]
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions)
    atoms.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
    e0 = atoms.get_potential_energy() / KCAL_PER_MOL
    assert e0 == pytest.approx(frame.energy, abs=1e-3)
    np.testing.assert_allclose(atoms.get_forces() / KCAL_PER_MOL, frame.forces, atol=0.05)
    h = 2e-3
    for atom, axis in ((0, 2), (1, 0)):
        energies = []
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.calc = TBLite(method="GFN2-xTB", accuracy=0.01, verbosity=0)
            displaced.positions[atom, axis] += sign * h
            energies.append(displaced.get_potential_energy() / KCAL_PER_MOL)
        fd_force = -(energies[0] - energies[1]) / (2 * h)
        assert fd_force == pytest.approx(frame.forces[atom, axis], abs=0.02, rel=0.01)


def test_xtb_md_from_smiles(tmp_path):
    pytest.importorskip("tblite.ase")
    pytest.importorskip("rdkit")
    gen = load_script("generate_xtb_md")
    out = gen.main(["--smiles", "CO", "--name", "methanol", "--frames", "2", "--equilibrate", "0",
                    "--every", "2", "--out", str(tmp_path / "meoh.npz"), "--quiet"])
    ds = read_dataset(out)
    assert len(ds) == 2 and ds.meta["name"] == "methanol"
    assert sorted(ds[0].numbers.tolist()) == [1, 1, 1, 1, 6, 8]
    with pytest.raises(SystemExit):
        gen.main(["--molecule", "not-a-molecule", "--out", str(tmp_path / "x.npz"), "--quiet"])


def test_emt_relaxations_oc20_layout(tmp_path):
    gen = load_script("generate_emt_relaxations")
    out = gen.main(["--systems", "2", "--steps", "3", "--seed", "4", "--out", str(tmp_path / "emt.lmdb"), "--quiet"])
    assert out.exists() and not (tmp_path / "emt.lmdb.tmp").exists()
    ds = read_dataset(out)
    assert ds.format == "oc20_lmdb" and ds.units["energy"] == "eV"
    assert 2 <= len(ds) <= 2 * 4
    sids = [f.info["sid"] for f in ds]
    assert sorted(set(sids)) == [0, 1]
    for sid in (0, 1):
        fids = [f.info["fid"] for f in ds if f.info["sid"] == sid]
        assert fids == list(range(len(fids)))
    for frame in ds:
        assert np.isfinite(frame.energy) and np.all(np.isfinite(frame.forces))
        assert frame.pbc.all() and frame.cell.shape == (3, 3)
        assert set(np.unique(frame.tags)) == {0, 1, 2}
        assert np.count_nonzero(frame.tags == 2) == 1 and frame.numbers[frame.tags == 2][0] in (1, 6, 7, 8)
        # as in OC20, every subsurface atom (tag 0) is fixed, nothing else: 2 of 3 layers of 2x2
        assert frame.fixed.sum() == 8 and np.array_equal(frame.fixed, frame.tags == 0)
        z = frame.positions[:, 2]
        assert z[frame.fixed].max() < z[~frame.fixed].min()
    # relaxation lowers the energy of each system
    for sid in (0, 1):
        e = [f.energy for f in ds if f.info["sid"] == sid]
        assert e[-1] < e[0]
    # energies agree with a fresh EMT single point
    from ase.calculators.emt import EMT

    atoms = ds[1].to_atoms()
    atoms.calc = EMT()
    assert atoms.get_potential_energy() == pytest.approx(ds[1].energy, abs=1e-4)


def test_emt_pairs_can_be_held_out(tmp_path):
    gen = load_script("generate_emt_relaxations")
    held = ["O/Pt", "N/Cu"]
    train = read_dataset(gen.main(["--systems", "12", "--steps", "0", "--metals", "Pt", "Cu", "--exclude-pairs", *held,
                                   "--out", str(tmp_path / "train.lmdb"), "--quiet"]))
    test = read_dataset(gen.main(["--systems", "6", "--steps", "0", "--pairs", *held,
                                  "--out", str(tmp_path / "test.lmdb"), "--quiet"]))

    def pairs(ds):
        return {f.info["system"].split("(")[0] for f in ds}

    assert pairs(train).isdisjoint(held) and pairs(test) <= set(held)
    with pytest.raises(SystemExit, match="ADSORBATE/METAL"):
        gen.main(["--pairs", "Pt/O", "--out", str(tmp_path / "x.lmdb"), "--quiet"])


def test_relaxation_endpoints_keep_start_and_relaxed_frame(tmp_path):
    gen = load_script("generate_emt_relaxations")
    src = gen.main(["--systems", "3", "--steps", "4", "--seed", "2", "--out", str(tmp_path / "r.lmdb"), "--quiet"])
    ends = load_script("relaxation_endpoints").main([str(src), str(tmp_path / "ends.lmdb")])
    full, kept = read_dataset(src), read_dataset(ends)
    assert len(kept) == 6
    for sid in range(3):
        frames = [f for f in full if f.info["sid"] == sid]
        pair = [f for f in kept if f.info["sid"] == sid]
        assert [f.info["fid"] for f in pair] == [0, frames[-1].info["fid"]]
        assert pair[1].energy == pytest.approx(frames[-1].energy) and pair[0].info["system"] == frames[0].info["system"]
