"""Dataset readers: each public layout is written here in small form and read back."""
from __future__ import annotations

import pickle

import lmdb
import numpy as np
import pytest
from ase import Atoms
from ase.build import fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from dequiformer.data import units
from dequiformer.data.readers import (
    DataError,
    Frame,
    FrameDataset,
    detect_format,
    frame_to_data_fields,
    read_dataset,
    write_oc20_lmdb,
)

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- helpers
def write_sgdml(path, T=6, species=(8, 1, 1), **override):
    z, N = species, len(species)
    arrays = {
        "R": RNG.normal(size=(T, N, 3)),
        "z": np.asarray(z, dtype=np.uint8),
        "E": RNG.normal(size=(T, 1)) - 1000.0,
        "F": RNG.normal(size=(T, N, 3)),
        "name": np.array("water"),
        "theory": np.array("DFT: PBE+TS"),
        "md5": np.array("0" * 32),
        "type": np.array("d"),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def write_rmd17(path, T=5):
    arrays = {
        "nuclear_charges": np.array([6, 1, 1, 1, 1]),
        "coords": RNG.normal(size=(T, 5, 3)),
        "energies": RNG.normal(size=T) - 2000.0,
        "forces": RNG.normal(size=(T, 5, 3)),
        "old_indices": np.arange(T) * 10,
        "old_energies": RNG.normal(size=T),
        "old_forces": RNG.normal(size=(T, 5, 3)),
    }
    np.savez(path, **arrays)
    return arrays


def slab_frame(energy=1.0, adsorbate=True):
    slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0, periodic=True)
    n = len(slab)
    numbers = list(slab.numbers) + ([8] if adsorbate else [])
    pos = np.vstack([slab.positions, [[1.0, 1.0, slab.positions[:, 2].max() + 1.5]]]) if adsorbate else slab.positions
    m = len(numbers)
    return Frame(positions=pos, numbers=np.array(numbers), cell=np.array(slab.cell[:]), pbc=np.ones(3, bool),
                 energy=energy, forces=RNG.normal(size=(m, 3)), fixed=np.arange(m) < n // 2,
                 tags=np.array([0] * (n // 2) + [1] * (n - n // 2) + ([2] if adsorbate else [])))


def put_raw_lmdb(path, entries: dict[bytes, bytes]):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24, lock=False)
    with env.begin(write=True) as txn:
        for k, v in entries.items():
            txn.put(k, v)
    env.close()


# ----------------------------------------------------------------------------- units
def test_units_constants_and_conversion():
    assert units.KCAL_PER_MOL == pytest.approx(0.0433641, rel=1e-5)
    assert units.energy_factor("kcal/mol", "eV") == pytest.approx(units.KCAL_PER_MOL)
    assert units.energy_factor("eV", "kcal/mol") == pytest.approx(1 / units.KCAL_PER_MOL)
    assert units.energy_to_ev(np.array([1.0, 2.0]), "kcal/mol") == pytest.approx([units.KCAL_PER_MOL, 2 * units.KCAL_PER_MOL])
    assert units.forces_to_ev_per_angstrom(np.ones(3), {"energy": "kcal/mol", "length": "Angstrom"}) == \
        pytest.approx(np.full(3, units.KCAL_PER_MOL))
    assert units.units_for_format("md17") == {"energy": "kcal/mol", "length": "Angstrom"}
    assert units.units_for_format("oc20_lmdb")["energy"] == "eV"
    with pytest.raises(ValueError, match="unknown unit"):
        units.energy_factor("furlong", "eV")


# ----------------------------------------------------------------------------- MD17 / MD22
def test_md17_roundtrip_and_views(tmp_path):
    path = tmp_path / "md17_water.npz"
    arrays = write_sgdml(path)
    assert detect_format(path) == "md17"
    ds = read_dataset(path)
    assert isinstance(ds, FrameDataset) and len(ds) == 6
    assert ds.units == {"energy": "kcal/mol", "length": "Angstrom"} and ds.format == "md17"
    assert ds.meta["name"] == "water" and ds.meta["theory"].startswith("DFT")
    f = ds[3]
    np.testing.assert_allclose(f.positions, arrays["R"][3])
    np.testing.assert_array_equal(f.numbers, [8, 1, 1])
    assert f.energy == pytest.approx(arrays["E"][3, 0])
    np.testing.assert_allclose(f.forces, arrays["F"][3])
    assert f.cell is None and not f.pbc.any() and f.info["index"] == 3
    atoms = f.to_atoms()
    assert atoms.get_potential_energy() == pytest.approx(f.energy)
    np.testing.assert_allclose(atoms.get_forces(), f.forces)
    sub = ds.subset([5, 1, -1])
    assert len(sub) == 3 and list(sub.source_indices) == [5, 1, 5]
    assert sub[1].info["index"] == 1 and sub.units == ds.units
    assert ds[-1].info["index"] == 5 and len(ds[2:4]) == 2
    with pytest.raises(IndexError, match="out of range"):
        ds.subset([6])
    assert len(pickle.loads(pickle.dumps(ds))) == 6


def test_md22_alias_and_E_shape_T(tmp_path):
    path = tmp_path / "md22_Ac-Ala3-NHMe.npz"
    write_sgdml(path, T=4, species=(6, 6, 7, 8, 1), E=RNG.normal(size=4))
    ds = read_dataset(path, format="md22")
    assert ds.format == "md17" and len(ds) == 4 and ds[0].natoms == 5


def test_rmd17_roundtrip(tmp_path):
    path = tmp_path / "rmd17_methane.npz"
    arrays = write_rmd17(path)
    assert detect_format(path) == "rmd17"
    ds = read_dataset(path)
    assert ds.format == "rmd17" and ds.units["energy"] == "kcal/mol"
    assert ds[2].energy == pytest.approx(arrays["energies"][2])
    np.testing.assert_allclose(ds[2].forces, arrays["forces"][2])
    np.testing.assert_array_equal(ds.meta["old_indices"], arrays["old_indices"])
    with pytest.raises(DataError, match="rmd17"):
        read_dataset(path, format="md17")


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"F": None}, r"missing key 'F'.*sGDML"),
        ({"F": np.zeros((6, 2, 3))}, r"key 'F' has shape \(6, 2, 3\), expected \(6, 3, 3\)"),
        ({"z": np.array([8, 1])}, r"key 'z' has shape \(2,\), expected \(3,\)"),
        ({"E": np.zeros((5, 1))}, r"key 'E' has shape \(5, 1\), expected \(6, 1\)"),
        ({"R": np.zeros((6, 3, 2))}, r"key 'R' has shape"),
    ],
)
def test_md17_bad_layout_errors_name_key_and_file(tmp_path, override, pattern):
    path = tmp_path / "bad.npz"
    write_sgdml(path, **override)
    with pytest.raises(DataError, match=pattern) as err:
        read_dataset(path, format="md17")
    assert "bad.npz" in str(err.value)


def test_md17_nan_label_names_frame(tmp_path):
    E = RNG.normal(size=(6, 1))
    E[4] = np.nan
    path = tmp_path / "nan.npz"
    write_sgdml(path, E=E)
    with pytest.raises(DataError, match=r"nan.npz: frame 4: energy label 'E' is NaN"):
        read_dataset(path)
    F = RNG.normal(size=(6, 3, 3))
    F[2, 1, 0] = np.inf
    write_sgdml(path, F=F)
    with pytest.raises(DataError, match=r"frame 2: force label 'F'"):
        read_dataset(path)


def test_empty_and_unknown_format(tmp_path):
    path = tmp_path / "empty.npz"
    write_sgdml(path, R=np.zeros((0, 3, 3)), E=np.zeros((0, 1)), F=np.zeros((0, 3, 3)))
    with pytest.raises(DataError, match="empty"):
        read_dataset(path)
    with pytest.raises(ValueError, match="unknown data format 'pdb'"):
        read_dataset(path, format="pdb")
    other = tmp_path / "data.weird"
    other.write_text("hello")
    with pytest.raises(ValueError, match="cannot detect the data format"):
        read_dataset(other)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        read_dataset(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, a=np.zeros(2))
    with pytest.raises(DataError, match="match neither"):
        read_dataset(junk)
    with pytest.raises(TypeError, match="does not accept option"):
        read_dataset(tmp_path / "empty.npz", format="md17", skip_bad=True)


# ----------------------------------------------------------------------------- OC20 LMDB
def test_oc20_lmdb_roundtrip(tmp_path):
    frames = [slab_frame(energy=0.5 * i) for i in range(4)]
    path = tmp_path / "data.0000.lmdb"
    assert write_oc20_lmdb(path, [frame_to_data_fields(f, sid=100 + i, fid=i) for i, f in enumerate(frames)]) == 4
    assert not (tmp_path / "data.0000.lmdb.tmp").exists()
    assert detect_format(path) == "oc20_lmdb"
    ds = read_dataset(path)
    assert len(ds) == 4 and ds.units == {"energy": "eV", "length": "Angstrom"} and ds.skipped == 0
    f = ds[2]
    assert f.energy == pytest.approx(1.0)
    np.testing.assert_allclose(f.positions, frames[2].positions, atol=1e-5)  # stored as float32
    np.testing.assert_allclose(f.forces, frames[2].forces, atol=1e-5)
    np.testing.assert_array_equal(f.numbers, frames[2].numbers)
    assert f.numbers.dtype.kind == "i"
    assert f.cell.shape == (3, 3) and f.pbc.tolist() == [True, True, True]
    np.testing.assert_array_equal(f.fixed, frames[2].fixed)
    np.testing.assert_array_equal(f.tags, frames[2].tags)
    assert f.info["sid"] == 102 and f.info["fid"] == 2
    atoms = f.to_atoms()
    assert isinstance(atoms.constraints[0], FixAtoms) and list(atoms.get_tags()) == list(f.tags)
    # the raw value is a pickled torch_geometric Data with OC20 field names
    from torch_geometric.data import Data

    from dequiformer.data.readers.oc20_lmdb import open_lmdb

    with open_lmdb(path).begin() as txn:
        raw = pickle.loads(txn.get(b"0"))
        length = pickle.loads(txn.get(b"length"))
    assert isinstance(raw, Data) and length == 4
    assert {"pos", "atomic_numbers", "cell", "natoms", "tags", "fixed", "y", "force", "sid", "fid"} <= set(raw.keys())
    assert tuple(raw.cell.shape) == (1, 3, 3)
    # a second dataset on the same file and a pickled copy both work
    assert read_dataset(path)[0].energy == pytest.approx(0.0)
    assert pickle.loads(pickle.dumps(ds))[3].info["fid"] == 3


def test_oc20_lmdb_folder(tmp_path):
    folder = tmp_path / "s2ef_train"
    write_oc20_lmdb(folder / "data.0000.lmdb", [frame_to_data_fields(slab_frame(1.0), 1, 0)] * 2)
    write_oc20_lmdb(folder / "data.0001.lmdb", [frame_to_data_fields(slab_frame(2.0), 2, i) for i in range(3)])
    assert detect_format(folder) == "oc20_lmdb"
    ds = read_dataset(folder)
    assert len(ds) == 5
    assert [f.energy for f in ds] == pytest.approx([1, 1, 2, 2, 2])
    assert ds[4].info["file"] == "data.0001.lmdb" and ds[4].info["fid"] == 2


def test_oc20_legacy_pyg1_pickle_and_alt_keys(tmp_path):
    import torch
    from torch_geometric.data import Data

    frame = slab_frame(3.25)
    legacy = object.__new__(Data)  # a PyG < 2.0 Data: fields directly in __dict__, no _store
    legacy.__dict__.update({
        "pos": torch.tensor(frame.positions, dtype=torch.float32),
        "atomic_numbers": torch.tensor(frame.numbers, dtype=torch.float32),
        "cell": torch.tensor(frame.cell, dtype=torch.float32).view(1, 3, 3),
        "natoms": frame.natoms,
        "tags": torch.tensor(frame.tags),
        "fixed": torch.tensor(frame.fixed, dtype=torch.float32),
        "energy": torch.tensor([3.25]),
        "forces": torch.tensor(frame.forces, dtype=torch.float32),
        "sid": torch.LongTensor([77]),
        "fid": 5,
        "edge_index": torch.zeros(2, 0, dtype=torch.long),
    })
    assert "_store" not in legacy.__dict__
    raw = pickle.dumps(legacy)
    path = tmp_path / "legacy.lmdb"
    put_raw_lmdb(path, {b"0": raw, b"length": pickle.dumps(1)})
    ds = read_dataset(path, format="oc20_lmdb")
    f = ds[0]
    assert f.energy == pytest.approx(3.25) and f.info == {"index": 0, "sid": 77, "fid": 5}
    np.testing.assert_allclose(f.forces, frame.forces, atol=1e-5)
    np.testing.assert_array_equal(f.fixed, frame.fixed)


def test_oc20_no_length_key_uses_integer_keys(tmp_path):
    entries = {str(i).encode(): pickle.dumps(frame_to_data_fields(slab_frame(float(i)), i, 0)) for i in range(12)}
    path = tmp_path / "nolen.lmdb"
    put_raw_lmdb(path, entries)  # plain dicts, no "length" key, keys sort as 0,1,10,11,2,... in LMDB
    ds = read_dataset(path, format="oc20")
    assert len(ds) == 12 and [f.energy for f in ds] == pytest.approx(list(range(12)))


def test_oc20_corrupt_entries_error_and_skip_bad(tmp_path):
    good = [frame_to_data_fields(slab_frame(float(i)), i, 0) for i in range(5)]
    nan_forces = dict(good[3])
    nan_forces["force"] = nan_forces["force"].clone()
    nan_forces["force"][0, 0] = float("nan")
    wrong_natoms = dict(good[4], natoms=99)
    entries = {
        b"0": pickle.dumps(good[0]),
        b"1": b"\x80\x04this is not a pickle",
        b"2": pickle.dumps(good[2]),
        b"3": pickle.dumps(nan_forces),
        b"4": pickle.dumps(wrong_natoms),
        b"length": pickle.dumps(6),  # entry 5 is missing
    }
    path = tmp_path / "corrupt.lmdb"
    put_raw_lmdb(path, entries)
    ds = read_dataset(path)
    assert len(ds) == 6 and ds[0].energy == 0.0
    with pytest.raises(DataError, match=r"corrupt.lmdb: entry 1: corrupt entry, cannot unpickle"):
        ds[1]
    with pytest.raises(DataError, match=r"corrupt.lmdb: frame 3: force label 'force' contains NaN"):
        ds[3]
    with pytest.raises(DataError, match=r"entry 4: key 'natoms' is 99 but 'pos' has 9 atoms"):
        ds[4]
    with pytest.raises(DataError, match=r"entry 5: key '5' is missing"):
        ds[5]
    clean = read_dataset(path, skip_bad=True)
    assert len(clean) == 2 and clean.skipped == 4 and clean.skipped_indices == [1, 3, 4, 5]
    assert [f.info["index"] for f in clean] == [0, 2]


def test_oc20_missing_labels(tmp_path):
    fields = frame_to_data_fields(slab_frame(1.0))
    del fields["y"]
    path = tmp_path / "nolabel.lmdb"
    put_raw_lmdb(path, {b"0": pickle.dumps(fields), b"length": pickle.dumps(1)})
    with pytest.raises(DataError, match=r"entry 0: missing energy key \(looked for \['y', 'energy'\]"):
        read_dataset(path)[0]
    assert read_dataset(path, require_labels=False)[0].energy is None
    with pytest.raises(DataError, match="all 1 entries are bad"):
        read_dataset(path, skip_bad=True)
    write_oc20_lmdb(tmp_path / "empty.lmdb", [])
    with pytest.raises(DataError, match=r"empty.lmdb: data set is empty \(0 entries\)"):
        read_dataset(tmp_path / "empty.lmdb")
    import ase.db

    ase.db.connect(str(tmp_path / "empty.db")).count()
    with pytest.raises(DataError, match=r"empty.db: data set is empty \(0 rows\)"):
        read_dataset(tmp_path / "empty.db")


# ----------------------------------------------------------------------------- ASE databases
def _labelled_atoms(i):
    atoms = fcc111("Pt", size=(2, 2, 2), vacuum=4.0, periodic=True)
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    atoms.set_tags([1] * 4 + [0] * 4)
    atoms.calc = SinglePointCalculator(atoms, energy=-10.0 - i, forces=np.full((8, 3), 0.1 * i))
    return atoms


@pytest.mark.parametrize("suffix", [".db", ".aselmdb"])
def test_ase_db_roundtrip(tmp_path, suffix):
    import ase.db

    path = tmp_path / f"structures{suffix}"
    db = ase.db.connect(str(path))
    for i in range(3):
        db.write(_labelled_atoms(i), ref_e=100.0 + i, data={"dft_forces": np.full((8, 3), -1.0 * i)})
    if hasattr(db, "close"):
        db.close()
    del db
    assert detect_format(path) == "ase_db"
    ds = read_dataset(path)
    assert len(ds) == 3 and ds.units == {"energy": "eV", "length": "Angstrom"}
    f = ds[1]
    assert f.energy == pytest.approx(-11.0)
    np.testing.assert_allclose(f.forces, 0.1)
    assert f.fixed.tolist() == [True] * 4 + [False] * 4 and f.tags.tolist() == [1] * 4 + [0] * 4
    assert f.pbc.all() and f.info["id"] == 2 and f.info["ref_e"] == 101.0
    keyed = read_dataset(path, energy_key="ref_e", forces_key="dft_forces")
    assert keyed[2].energy == pytest.approx(102.0)
    np.testing.assert_allclose(keyed[2].forces, -2.0)
    with pytest.raises(DataError, match=r"row 0 \(id 1\): missing key 'nope'"):
        read_dataset(path, energy_key="nope")[0]
    assert read_dataset(path, energy_key="nope", calc_fallback=True)[0].energy == pytest.approx(-10.0)


def test_aselmdb_backend_registered_and_lmdb_suffix(tmp_path):
    import ase.db

    path = tmp_path / "omat.lmdb"  # an ASE LMDB under a plain .lmdb name is told apart from OC20
    db = ase.db.connect(str(path), type="aselmdb")
    assert type(db).__module__.startswith("ase_db_backends")
    db.write(_labelled_atoms(0))
    db.close()
    del db
    assert detect_format(path) == "ase_db"
    assert read_dataset(path)[0].energy == pytest.approx(-10.0)


def test_ase_db_missing_forces(tmp_path):
    import ase.db

    path = tmp_path / "nof.db"
    atoms = molecule("H2O")
    atoms.calc = SinglePointCalculator(atoms, energy=1.0)
    db = ase.db.connect(str(path))
    db.write(atoms)
    del db
    with pytest.raises(DataError, match=r"nof.db: row 0 \(id 1\): missing forces"):
        read_dataset(path)[0]
    frame = read_dataset(path, require_labels=False)[0]
    assert frame.energy == 1.0 and frame.forces is None and frame.cell is None


# ----------------------------------------------------------------------------- extxyz
def _xyz_images(n=3, periodic=False):
    images = []
    for i in range(n):
        atoms = molecule("CH4") if not periodic else Atoms("Cu4", scaled_positions=RNG.random((4, 3)),
                                                            cell=np.eye(3) * 4.0, pbc=True)
        atoms.info["REF_energy"] = -5.0 - i
        atoms.info["config_type"] = "md"
        atoms.arrays["REF_forces"] = RNG.normal(size=(len(atoms), 3))
        images.append(atoms)
    return images


def test_extxyz_mace_keys(tmp_path):
    import ase.io

    images = _xyz_images(3) + _xyz_images(1, periodic=True)
    path = tmp_path / "train.xyz"
    ase.io.write(str(path), images, format="extxyz")
    assert detect_format(path) == "extxyz"
    ds = read_dataset(path)
    assert len(ds) == 4 and ds.units["energy"] == "eV"
    assert ds[1].energy == pytest.approx(-6.0)
    np.testing.assert_allclose(ds[1].forces, images[1].arrays["REF_forces"], atol=1e-7)
    assert ds[0].cell is None and ds[1].info["config_type"] == "md"
    assert ds[3].pbc.all() and ds[3].cell[0, 0] == pytest.approx(4.0)


def test_extxyz_custom_keys_missing_keys_and_calc_fallback(tmp_path):
    import ase.io

    images = _xyz_images(2)
    for atoms in images:
        atoms.info["dft_e"] = atoms.info.pop("REF_energy")
        atoms.arrays["dft_f"] = atoms.arrays.pop("REF_forces")
    path = tmp_path / "custom.extxyz"
    ase.io.write(str(path), images, format="extxyz")
    ds = read_dataset(path, energy_key="dft_e", forces_key="dft_f")
    assert ds[1].energy == pytest.approx(-6.0)
    with pytest.raises(DataError, match=r"custom.extxyz: frame 0: missing energy key 'REF_energy'"):
        read_dataset(path)

    calc_images = []
    for i in range(2):
        atoms = molecule("H2O")
        atoms.calc = SinglePointCalculator(atoms, energy=float(i), forces=np.full((3, 3), float(i)))
        calc_images.append(atoms)
    calc_path = tmp_path / "calc.xyz"
    ase.io.write(str(calc_path), calc_images, format="extxyz")
    with pytest.raises(DataError, match="calc_fallback=True"):
        read_dataset(calc_path)
    fallback = read_dataset(calc_path, calc_fallback=True)
    assert fallback[1].energy == 1.0 and fallback[1].forces[0, 0] == 1.0
    direct = read_dataset(calc_path, energy_key="energy", forces_key="forces")
    assert direct[1].energy == 1.0


def test_extxyz_nan_label_names_frame(tmp_path):
    import ase.io

    images = _xyz_images(3)
    images[2].info["REF_energy"] = float("nan")
    path = tmp_path / "nan.xyz"
    ase.io.write(str(path), images, format="extxyz")
    with pytest.raises(DataError, match=r"frame 2: energy label 'REF_energy' is NaN"):
        read_dataset(path)


def test_frame_from_atoms_roundtrip():
    atoms = _labelled_atoms(2)
    frame = Frame.from_atoms(atoms, energy=-12.0, forces=atoms.get_forces(apply_constraint=False))
    back = frame.to_atoms()
    assert back.get_potential_energy() == -12.0
    assert back.constraints[0].get_indices().tolist() == [0, 1, 2, 3]
    assert back.get_tags().tolist() == atoms.get_tags().tolist()
    np.testing.assert_allclose(back.cell[:], atoms.cell[:])


def _read_in_child(ds, index, queue):
    try:
        queue.put(("ok", ds[index].energy))
    except Exception as exc:  # report to the parent instead of dying silently
        queue.put(("error", repr(exc)))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_lazy_datasets_survive_fork_after_parent_reads(tmp_path):
    """DataLoader workers fork after the parent has read: LMDB handles must still work."""
    import multiprocessing as mp

    import ase.db

    oc20 = tmp_path / "fork.lmdb"
    write_oc20_lmdb(oc20, [frame_to_data_fields(slab_frame(float(i)), i, 0) for i in range(3)])
    aselmdb = tmp_path / "fork.aselmdb"
    db = ase.db.connect(str(aselmdb))
    for i in range(3):
        db.write(_labelled_atoms(i))
    db.close()
    del db
    ctx = mp.get_context("fork")
    for path, expected in ((oc20, 2.0), (aselmdb, -12.0)):
        ds = read_dataset(path)
        ds[0]  # parent opens the file first
        queue = ctx.Queue()
        child = ctx.Process(target=_read_in_child, args=(ds, 2, queue))
        child.start()
        status, value = queue.get(timeout=30)
        child.join(timeout=30)
        assert status == "ok", value
        assert value == pytest.approx(expected)
