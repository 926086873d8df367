"""Splits (Equiformer MD17 rule, rMD17 official CSVs, OC20 separate files) and normalisation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dequiformer.data.normalization import (
    Normalizer,
    denormalize_energy,
    fit_normalizer,
    normalize_energy,
    species_counts,
)
from dequiformer.data.readers import Frame, FrameDataset, frame_to_data_fields, read_dataset, write_oc20_lmdb
from dequiformer.data.splits import (
    Splits,
    datasets_from_config,
    find_rmd17_split_files,
    make_splits,
    random_split,
    read_index_csv,
    rmd17_official_split,
)

RNG = np.random.default_rng(1)


def write_md17(path, T):
    np.savez(path, R=RNG.normal(size=(T, 3, 3)), z=np.array([8, 1, 1]), E=np.arange(T, dtype=float)[:, None],
             F=RNG.normal(size=(T, 3, 3)))


# ----------------------------------------------------------------------------- splits
def test_random_split_follows_equiformer_rule():
    s = random_split(1200)
    perm = np.random.default_rng(seed=1).permutation(1200)
    np.testing.assert_array_equal(s.train, perm[:950])
    np.testing.assert_array_equal(s.val, perm[950:1000])
    np.testing.assert_array_equal(s.test, perm[1000:])
    assert s.sizes() == {"train": 950, "val": 50, "test": 200}
    s.check(1200)
    small = random_split(30, n_train=10, n_val=5, n_test=7, seed=3)
    perm = np.random.default_rng(3).permutation(30)
    np.testing.assert_array_equal(small.test, perm[15:22])
    with pytest.raises(ValueError, match="n_train=950 \\+ n_val=50 frames from a data set of 900"):
        random_split(900)
    with pytest.raises(ValueError, match="n_test=20"):
        random_split(30, n_train=10, n_val=5, n_test=20)


def test_splits_save_load_atomic_and_reuse(tmp_path):
    path = tmp_path / "md17.npz"
    write_md17(path, 40)
    ds = read_dataset(path)
    run = tmp_path / "run"
    s = make_splits(ds, n_train=20, n_val=5, run_dir=run)
    assert (run / "splits.npz").exists() and not (run / "splits.npz.tmp").exists()
    loaded = Splits.load(run)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(s, name))
    assert loaded.meta["seed"] == 1 and loaded.meta["n"] == 40 and loaded.meta["method"] == "random"
    # a resumed run reuses the file even if asked for other sizes
    again = make_splits(ds, n_train=30, n_val=2, run_dir=run)
    np.testing.assert_array_equal(again.train, s.train)
    other = tmp_path / "md17_small.npz"
    write_md17(other, 30)
    with pytest.raises(ValueError, match="made for 40 frames"):
        make_splits(read_dataset(other), run_dir=run)


def test_splits_check_overlap_and_range():
    with pytest.raises(ValueError, match="val split index 12 out of range"):
        Splits([0, 1], [12], [3]).check(10)
    with pytest.raises(ValueError, match="train and test splits share 1"):
        Splits([0, 1], [2], [1]).check(10)


def _write_rmd17_archive(root, T=60):
    """rmd17/npz_data/rmd17_x.npz and rmd17/splits/index_{train,test}_0K.csv as on figshare."""
    (root / "npz_data").mkdir(parents=True)
    (root / "splits").mkdir()
    np.savez(root / "npz_data" / "rmd17_ethanol.npz", nuclear_charges=np.array([8, 1, 1]),
             coords=RNG.normal(size=(T, 3, 3)), energies=RNG.normal(size=T), forces=RNG.normal(size=(T, 3, 3)))
    perm = np.random.default_rng(7).permutation(T)
    for k in (1, 2):
        (root / "splits" / f"index_train_0{k}.csv").write_text("\n".join(map(str, perm[:20])) + "\n")
        (root / "splits" / f"index_test_0{k}.csv").write_text("\n".join(map(str, perm[20:35])) + "\n\n")
    return root / "npz_data" / "rmd17_ethanol.npz", perm


def test_rmd17_official_split(tmp_path):
    npz, perm = _write_rmd17_archive(tmp_path / "rmd17")
    train_csv, test_csv = find_rmd17_split_files(npz, split=2)
    assert train_csv.name == "index_train_02.csv" and test_csv.parent.name == "splits"
    s = rmd17_official_split(60, npz, split=2, n_train=15, n_val=5)
    np.testing.assert_array_equal(s.test, perm[20:35])
    pool = perm[:20]
    p2 = np.random.default_rng(1).permutation(20)
    np.testing.assert_array_equal(s.train, pool[p2[:15]])
    np.testing.assert_array_equal(s.val, pool[p2[15:20]])
    assert s.meta["method"] == "rmd17_official" and s.meta["split"] == 2
    # default n_train=None in the config path takes the whole pool minus validation
    out = datasets_from_config({"path": str(npz), "rmd17_split": 1, "n_train": None, "n_val": 4})
    assert len(out["train"]) == 16 and len(out["val"]) == 4 and len(out["test"]) == 15
    with pytest.raises(FileNotFoundError, match="index_train_03.csv"):
        rmd17_official_split(60, npz, split=3, splits_dir=tmp_path / "rmd17" / "splits")
    assert find_rmd17_split_files(tmp_path / "elsewhere.npz") is None


def test_read_index_csv_errors(tmp_path):
    bad = tmp_path / "index_train_01.csv"
    bad.write_text("1\n2\nthree\n")
    with pytest.raises(ValueError, match=r"index_train_01.csv: line 3: 'three' is not an integer"):
        read_index_csv(bad)
    bad.write_text("\n")
    with pytest.raises(ValueError, match="holds no indices"):
        read_index_csv(bad)
    bad.write_text("4.0\n5\n")
    assert read_index_csv(bad).tolist() == [4, 5]


def test_datasets_from_config_md17_and_oc20(tmp_path):
    path = tmp_path / "md17.npz"
    write_md17(path, 30)
    out = datasets_from_config({"path": str(path), "n_train": 10, "n_val": 5}, run_dir=tmp_path / "run")
    assert [len(out[k]) for k in ("train", "val", "test")] == [10, 5, 15]
    assert (tmp_path / "run" / "splits.npz").exists()
    with pytest.raises(ValueError, match="data.path is not set"):
        datasets_from_config({})

    def frame(e):
        return Frame(positions=RNG.normal(size=(2, 3)) + [[0, 0, 0], [0, 0, 2]], numbers=np.array([29, 8]),
                     cell=np.eye(3) * 6, pbc=np.ones(3, bool), energy=e, forces=RNG.normal(size=(2, 3)))

    write_oc20_lmdb(tmp_path / "train.lmdb", [frame_to_data_fields(frame(float(i)), i, 0) for i in range(8)])
    write_oc20_lmdb(tmp_path / "val.lmdb", [frame_to_data_fields(frame(-float(i)), i, 0) for i in range(3)])
    cfg = {"path": str(tmp_path / "train.lmdb"), "val_path": str(tmp_path / "val.lmdb"), "format": "oc20_lmdb",
           "options": {"skip_bad": True}}
    out = datasets_from_config(cfg, run_dir=tmp_path / "oc20_run")
    assert len(out["train"]) == 8 and len(out["val"]) == 3 and out["test"] is None
    assert out["val"][2].energy == -2.0
    sub = datasets_from_config(dict(cfg, n_train=5), run_dir=None)
    assert len(sub["train"]) == 5
    # CCSD(T)-style separate test file
    test_path = tmp_path / "md17_test.npz"
    write_md17(test_path, 12)
    out = datasets_from_config({"path": str(path), "test_path": str(test_path), "n_train": 20, "n_val": 10})
    assert [len(out[k]) for k in ("train", "val", "test")] == [20, 10, 12]


# ----------------------------------------------------------------------------- normalisation
REFS = {1: -13.6, 6: -1030.0, 8: -2040.0}


def _frames(n=40, noise=0.0, forces=True):
    frames = []
    for i in range(n):
        counts = {1: RNG.integers(1, 6), 6: RNG.integers(0, 4), 8: RNG.integers(0, 3)}
        numbers = np.concatenate([[z] * int(c) for z, c in counts.items()]).astype(int)
        energy = sum(REFS[z] * c for z, c in counts.items()) + noise * RNG.normal()
        frames.append(Frame(positions=RNG.normal(size=(len(numbers), 3)), numbers=numbers, cell=None,
                            pbc=np.zeros(3, bool), energy=energy,
                            forces=RNG.normal(scale=2.0, size=(len(numbers), 3)) if forces else None))
    return FrameDataset.from_frames(frames, units={"energy": "eV", "length": "Angstrom"}, source="synthetic")


def test_linear_reference_recovers_element_energies():
    ds = _frames(noise=0.0)
    norm = fit_normalizer(ds, mode="linear_reference", scale="force_rms")
    assert norm.elements == [1, 6, 8] and norm.units["energy"] == "eV"
    np.testing.assert_allclose(norm.references, [REFS[1], REFS[6], REFS[8]], atol=1e-6)
    all_f = np.concatenate([f.forces.ravel() for f in ds])
    assert norm.force_rms == pytest.approx(np.sqrt(np.mean(all_f ** 2)))
    assert norm.scale == norm.force_rms and norm.scale_source == "force_rms"
    counts = species_counts([f.numbers for f in ds], norm.elements)
    energies = np.array([f.energy for f in ds])
    np.testing.assert_allclose(normalize_energy(energies, counts, norm), 0.0, atol=1e-6)


def test_per_atom_mode_roundtrip_numpy_torch_and_dict():
    ds = _frames(noise=0.5)
    norm = fit_normalizer(ds, mode="per_atom")
    energies = np.array([f.energy for f in ds])
    natoms = np.array([f.natoms for f in ds])
    assert norm.per_atom_mean == pytest.approx(np.mean(energies / natoms))
    resid = energies - natoms * norm.per_atom_mean
    assert norm.scale == pytest.approx(np.std(resid)) and norm.scale_source == "energy_std"
    counts = species_counts([f.numbers for f in ds], norm.elements)
    e_hat = norm.normalize_energy(energies, counts)
    np.testing.assert_allclose(e_hat, resid / norm.scale)
    np.testing.assert_allclose(norm.denormalize_energy(e_hat, counts), energies)

    state = json.loads(json.dumps(norm.to_dict()))  # checkpoint-safe
    again = Normalizer.from_dict(state)
    assert again == norm
    t_e = torch.tensor(energies, dtype=torch.float64)
    t_counts = torch.as_tensor(counts)
    t_hat = normalize_energy(t_e, t_counts, state)
    assert isinstance(t_hat, torch.Tensor) and t_hat.dtype == torch.float64
    np.testing.assert_allclose(t_hat.numpy(), e_hat)
    back = denormalize_energy(t_hat.float(), t_counts, again)
    assert back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), energies, rtol=1e-6)
    f = torch.ones(3, 3)
    assert torch.allclose(again.denormalize_forces(again.normalize_forces(f)), f)
    with pytest.raises(ValueError, match="unknown keys"):
        Normalizer.from_dict({**state, "bogus": 1})


def test_species_counts_flat_batch_torch_and_numpy():
    numbers = torch.tensor([1, 8, 1, 6, 1, 1])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    counts = species_counts(numbers, [1, 6, 8], batch=batch)
    assert counts.tolist() == [[2, 0, 1], [2, 1, 0]]
    assert species_counts(numbers.numpy(), [1, 6, 8], batch=batch.numpy(), num_graphs=3).tolist() == \
        [[2, 0, 1], [2, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="element Z=8 is not among the normalizer elements \\[1, 6\\]"):
        species_counts(numbers, [1, 6], batch=batch)
    with pytest.raises(ValueError, match="Z=8"):
        species_counts([np.array([1, 8])], [1, 6])


def test_fit_options_and_errors():
    ds = _frames(n=10, forces=False)
    norm = fit_normalizer(ds, mode="none", scale=2.5, elements=[1, 6, 8, 29])
    assert norm.elements == [1, 6, 8, 29] and norm.references == [0.0] * 4 and norm.scale == 2.5
    assert norm.force_rms == 0.0
    lin = fit_normalizer(ds, mode="linear_reference", elements=[29], scale="none")
    assert lin.references[-1] == 0.0  # element absent from training data
    assert fit_normalizer(ds, max_frames=4).n_frames == 4
    with pytest.raises(ValueError, match="mode 'bogus'"):
        fit_normalizer(ds, mode="bogus")
    with pytest.raises(ValueError, match="scale 'bogus'"):
        fit_normalizer(ds, scale="bogus")
    one = FrameDataset.from_frames([ds[0]], units={"energy": "eV", "length": "Angstrom"}, source="one")
    with pytest.warns(UserWarning, match="degenerate"):
        assert fit_normalizer(one).scale == 1.0
    unlabelled = Frame(positions=np.zeros((1, 3)), numbers=np.array([1]), cell=None, pbc=np.zeros(3, bool),
                       energy=None, forces=None)
    with pytest.raises(ValueError, match="frame 0 has no energy"):
        fit_normalizer([unlabelled])
