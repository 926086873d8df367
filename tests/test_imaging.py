"""Graph images: structure readers, canonical node-neighbour images, labelled data sets.

All inputs are small files written here in the public layouts (QMugs, QMOF,
JARVIS/OQMD-style band-gap tables, CIFAR-10 python batches).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from dequiformer.imaging import datasets as ds
from dequiformer.imaging.bond_graph import build_bond_graph, default_cutoff, node_neighbour_graph
from dequiformer.imaging.image_dataset import ImageDataset
from dequiformer.imaging.palette import element_colours
from dequiformer.imaging.render import RenderConfig, image_to_tensor, render_structure, save_legend
from dequiformer.imaging.structures import (
    StructureReadError, read_sdf, read_structure, read_structure_with_tags)

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _transform(atoms: Atoms, seed: int) -> Atoms:
    """Permute atoms, rotate (cell too) and translate; wrap periodic structures."""
    rng = np.random.default_rng(seed)
    out = atoms[rng.permutation(len(atoms))]
    rot = _random_rotation(rng)
    out.set_cell(out.cell.array @ rot.T, scale_atoms=False)
    out.positions = out.positions @ rot.T + rng.normal(scale=3.0, size=3)
    if out.pbc.any():
        out.wrap()
    return out


def _mol_with_hs(smiles: str, seed: int = 7):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    assert AllChem.EmbedMolecule(mol, params) == 0
    return mol


def _write_qmugs_sdf(path: Path, smiles: str, chembl: str, conf: str, dipole: str | None) -> None:
    from rdkit import Chem

    mol = _mol_with_hs(smiles)
    mol.SetProp("_Name", chembl)
    mol.SetProp("CHEMBL_ID", chembl)
    mol.SetProp("CONF_ID", conf)
    if dipole is not None:
        mol.SetProp("DFT:DIPOLE", dipole)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Chem.SDWriter(str(path)) as w:
        w.write(mol)


def _write_p1_cif(path: Path, atoms: Atoms, name: str) -> None:
    """Pymatgen-style P1 CIF, the layout of QMOF's relaxed_structures/*.cif."""
    a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
    lines = ["# generated using pymatgen", f"data_{name}",
             "_symmetry_space_group_name_H-M   'P 1'",
             f"_cell_length_a   {a:.8f}", f"_cell_length_b   {b:.8f}", f"_cell_length_c   {c:.8f}",
             f"_cell_angle_alpha   {alpha:.8f}", f"_cell_angle_beta   {beta:.8f}",
             f"_cell_angle_gamma   {gamma:.8f}", "_symmetry_Int_Tables_number   1",
             f"_chemical_formula_structural   {atoms.get_chemical_formula()}",
             f"_cell_volume   {atoms.get_volume():.8f}",
             "loop_", " _symmetry_equiv_pos_site_id", " _symmetry_equiv_pos_as_xyz", "  1  'x, y, z'",
             "loop_", " _atom_site_type_symbol", " _atom_site_label", " _atom_site_symmetry_multiplicity",
             " _atom_site_fract_x", " _atom_site_fract_y", " _atom_site_fract_z", " _atom_site_occupancy"]
    for k, (sym, frac) in enumerate(zip(atoms.get_chemical_symbols(), atoms.get_scaled_positions())):
        lines.append(f"  {sym}  {sym}{k}  1  {frac[0]:.8f}  {frac[1]:.8f}  {frac[2]:.8f}  1")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


# --------------------------------------------------------------------------- palette, graph, image
def test_palette_distinct_and_never_black():
    table = element_colours()
    assert table.shape == (119, 3) and table.dtype == np.uint8
    colours = {tuple(c) for c in table[1:]}
    assert len(colours) == 118 and (0, 0, 0) not in colours
    assert tuple(table[8]) == (255, 13, 13) and tuple(table[1]) == (255, 255, 255)


def test_bond_graph_cutoffs_and_periodic_neighbours():
    assert default_cutoff(molecule("H2O")) == 2.0
    assert default_cutoff(bulk("Cu")) == 3.4
    g = build_bond_graph(bulk("Cu", "fcc", a=3.6))  # one atom per cell, 12 images at 2.55 A
    assert g.num_atoms == 1 and g.degrees().tolist() == [12]
    nn = node_neighbour_graph(molecule("H2O"))
    assert nn.records[0].number == 8 and len(nn.records[0].neighbours) == 2
    z, nz, nd = nn.as_arrays(3)
    assert z.tolist() == [8, 1, 1] and nz[0].tolist() == [1, 1, 0]
    assert np.isclose(nd[0, 0], 0.969, atol=0.01)


def test_image_is_deterministic_and_well_formed():
    mol = molecule("CH3CH2OH")
    a, b = render_structure(mol), render_structure(mol.copy())
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert a.tobytes() == b.tobytes()
    t = image_to_tensor(a)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)
    assert float(t.max()) <= 1.0 and float(t.min()) >= 0.0
    # different molecule with the same formula -> different image
    assert render_structure(molecule("CH3OCH3")).tobytes() != a.tobytes()
    # first record: heaviest atom (O) itself, then its neighbours (H nearest, then C)
    assert tuple(a[0, 0]) == (255, 13, 13)


@pytest.mark.parametrize("config", [RenderConfig(), RenderConfig(fill="pad"), RenderConfig(size=(3, 8), slots=4)])
def test_molecule_image_invariance(config):
    mol = molecule("C6H6") + molecule("CH3CH2OH")
    mol.positions[-9:] += (0.0, 0.0, 6.0)  # two fragments, 21 atoms; 3x8/4 = 6 records -> resized
    ref = render_structure(mol, config=config)
    for seed in range(3):
        assert render_structure(_transform(mol, seed), config=config).tobytes() == ref.tobytes()


def test_crystal_image_invariance():
    crystal = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1)) + Atoms("O", [(0.7, 0.6, 0.4)])
    crystal.rattle(0.05, seed=1)  # no symmetry: every distance distinct
    wurtzite = bulk("ZnO", "wurtzite", a=3.25, c=5.2).repeat((1, 1, 2))
    for structure in (crystal, wurtzite):
        ref = render_structure(structure)
        assert ref.any()
        for seed in range(3):
            assert render_structure(_transform(structure, seed)).tobytes() == ref.tobytes()


def test_fill_modes_and_supercell():
    water = molecule("H2O")
    padded = render_structure(water, config=RenderConfig(fill="pad"))
    assert padded[0, 8:].any() and not padded[1:].any()  # 3 records in row 0, then black
    full = render_structure(water)
    assert full.reshape(-1, 8, 3).any(axis=(1, 2)).all()  # every strip of the stretched image is used
    assert full[0, :8].tobytes() == padded[0, :8].tobytes()
    # a supercell gives the image of its cell when both atom counts divide the capacity
    nacl = bulk("NaCl", "rocksalt", a=5.64)
    assert render_structure(nacl).tobytes() == render_structure(nacl.repeat((2, 2, 2))).tobytes()


def test_render_config_validation_and_legend(tmp_path):
    with pytest.raises(ValueError, match="slots"):
        RenderConfig(size=(8, 8), slots=9)
    png, js = save_legend(tmp_path / "legend", elements=[1, 6, 7, 8], config=RenderConfig(), cutoff=2.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = json.loads(js.read_text())
    assert [r["symbol"] for r in info["palette"]] == ["H", "C", "N", "O"]
    assert info["cutoff_angstrom"] == 2.0 and "intensity" in info


# --------------------------------------------------------------------------- structure files
def test_structure_readers(tmp_path):
    import ase.io

    water = molecule("H2O")
    ase.io.write(tmp_path / "w.xyz", water)
    ase.io.write(tmp_path / "w.pdb", water)
    _write_p1_cif(tmp_path / "nacl.cif", bulk("NaCl", "rocksalt", a=5.64, cubic=True), "NaCl")
    assert read_structure(tmp_path / "w.xyz").get_chemical_formula() == "H2O"
    assert read_structure(tmp_path / "w.pdb").get_chemical_formula() == "H2O"
    nacl = read_structure(tmp_path / "nacl.cif")
    assert len(nacl) == 8 and nacl.pbc.all() and np.isclose(nacl.cell.cellpar()[0], 5.64)
    _write_qmugs_sdf(tmp_path / "m.sdf", "CC(=O)N", "CHEMBL1", "conf_00", "1.0|2.0|2.0|3.0")
    atoms, tags = read_structure_with_tags(tmp_path / "m.sdf")
    assert len(atoms) == 9 and tags["DFT:DIPOLE"] == "1.0|2.0|2.0|3.0" and tags["CHEMBL_ID"] == "CHEMBL1"
    assert read_sdf(tmp_path / "m.sdf")[0][0].info["sdf_tags"]["CONF_ID"] == "conf_00"

    with pytest.raises(FileNotFoundError, match="nope.cif"):
        read_structure(tmp_path / "nope.cif")
    (tmp_path / "bad.cif").write_text("this is not a cif\n")
    with pytest.raises(StructureReadError, match="bad.cif"):
        read_structure(tmp_path / "bad.cif")
    (tmp_path / "bad.sdf").write_text("garbage\n\n\n")
    with pytest.raises(StructureReadError, match="bad.sdf"):
        read_sdf(tmp_path / "bad.sdf")


# --------------------------------------------------------------------------- QMugs
def _qmugs_tree(root: Path) -> None:
    mols = [("CHEMBL10", "conf_00", "CCO", "0.1|1.2|0.9|1.5"),
            ("CHEMBL10", "conf_01", "CCO", "0.5|0.5|0.0|0.707"),
            ("CHEMBL22", "conf_00", "CC(=O)N", "3.0|1.0|2.0|3.742"),
            ("CHEMBL35", "conf_02", "c1ccccc1C#N", "4.1|0.0|0.3|4.111")]
    for chembl, conf, smi, dip in mols:
        _write_qmugs_sdf(root / "structures" / chembl / f"{conf}.sdf", smi, chembl, conf, dip)
    _write_csv(root / "summary.csv", ["chembl_id", "conf_id", "heavy_atoms", "DFT:DIPOLE", "GFN2:DIPOLE"],
               [[c, k, 3, d, d] for c, k, _, d in mols])


def test_qmugs_summary_and_sdf_tags(tmp_path):
    _qmugs_tree(tmp_path)
    from_csv = ds.qmugs_dataset(tmp_path)
    assert from_csv.labels.tolist() == [0, 0, 1, 1]
    assert from_csv.class_names == ["weakly_polar", "strongly_polar"]
    assert from_csv.ids[2] == "CHEMBL22/conf_00" and from_csv.metadata["threshold_debye"] == 3.0
    assert from_csv.metadata["table_source"] == "summary_csv"
    # SDF tags alone give the same images and labels
    files = sorted((tmp_path / "structures").rglob("*.sdf"))
    from_sdf = ds.qmugs_dataset(sdf_files=files, threshold=1.0)
    assert from_sdf.labels.tolist() == [1, 0, 1, 1]
    assert from_sdf.images.tobytes() == from_csv.images.tobytes()
    np.testing.assert_allclose(ds.parse_dipole("1|2|2"), [1, 2, 2, 3])


def test_qmugs_errors(tmp_path):
    _qmugs_tree(tmp_path)
    with pytest.raises(KeyError, match=r"summary\.csv.*'DFT:QUADRUPOLE'"):
        ds.qmugs_dataset(tmp_path, column="DFT:QUADRUPOLE")
    with pytest.raises(KeyError, match=r"conf_00\.sdf.*'DFT:QUADRUPOLE'"):
        ds.qmugs_dataset(sdf_files=[tmp_path / "structures/CHEMBL22/conf_00.sdf"], column="DFT:QUADRUPOLE")
    (tmp_path / "structures/CHEMBL35/conf_02.sdf").unlink()
    with pytest.raises(FileNotFoundError, match="CHEMBL35/conf_02.sdf"):
        ds.qmugs_dataset(tmp_path)
    assert ds.qmugs_dataset(tmp_path, skip_missing=True).metadata["skipped_missing_file"] == 1
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ds.qmugs_dataset(tmp_path / "nowhere")
    _write_csv(tmp_path / "bad.csv", ["chembl_id", "conf_id", "DFT:DIPOLE"], [["C1", "conf_00", "1|x|2|3"]])
    with pytest.raises(ValueError, match=r"bad\.csv row 2 column 'DFT:DIPOLE'"):
        ds.read_qmugs_summary(tmp_path / "bad.csv")


# --------------------------------------------------------------------------- QMOF
def test_qmof_pore_classes(tmp_path):
    structures = {"qmof-aaa01": bulk("Cu", "fcc", a=3.6, cubic=True),
                  "qmof-bbb02": bulk("NaCl", "rocksalt", a=5.64, cubic=True),
                  "qmof-ccc03": bulk("Si", "diamond", a=5.43, cubic=True),
                  "qmof-ddd04": bulk("Zn", "hcp", a=2.66, c=4.95)}
    for ident, atoms in structures.items():
        _write_p1_cif(tmp_path / "relaxed_structures" / f"{ident}.cif", atoms, ident)
    _write_csv(tmp_path / "qmof.csv", ["qmof_id", "name", "info.pld", "info.lcd", "outputs.pbe.bandgap"],
               [["qmof-aaa01", "A", 3.1, 4.0, 0.0], ["qmof-bbb02", "B", 5.5, 6.1, 1.2],
                ["qmof-ccc03", "C", 9.0, 12.0, 2.0], ["qmof-ddd04", "D", "", "", 0.1]])
    data = ds.qmof_dataset(tmp_path / "qmof.csv")
    assert data.labels.tolist() == [0, 1, 2] and data.metadata["skipped_missing_value"] == 1
    assert data.class_names == ["pld<4", "4<=pld<7", "pld>=7"]
    lcd = ds.qmof_dataset(tmp_path / "qmof.csv", column="info.lcd", bin_edges=[5.0])
    assert lcd.labels.tolist() == [0, 1, 1] and lcd.class_names == ["lcd<5", "lcd>=5"]
    # the same structure gives the same image through the CIF round trip
    cu = render_structure(structures["qmof-aaa01"], config=ds.PERIODIC_RENDER_CONFIG)
    assert data.images[0].tobytes() == cu.tobytes()
    assert data.metadata["render_config"]["slots"] == 16

    with pytest.raises(KeyError, match=r"qmof\.csv.*'info\.xyz'"):
        ds.qmof_dataset(tmp_path / "qmof.csv", column="info.xyz")
    (tmp_path / "relaxed_structures/qmof-ccc03.cif").unlink()
    with pytest.raises(FileNotFoundError, match="qmof-ccc03.cif"):
        ds.qmof_dataset(tmp_path / "qmof.csv")
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        ds.qmof_dataset(tmp_path / "missing.csv")


# --------------------------------------------------------------------------- band gaps
def test_bandgap_classes_jarvis_style(tmp_path):
    import ase.io

    structures = {"JVASP-816": bulk("Al", "fcc", a=4.05), "JVASP-1002": bulk("Si", "diamond", a=5.43),
                  "JVASP-23862": bulk("NaCl", "rocksalt", a=5.64), "JVASP-9": bulk("Cu", "fcc", a=3.6)}
    for ident, atoms in structures.items():
        ase.io.write(tmp_path / f"{ident}.vasp", atoms, format="vasp")
    _write_csv(tmp_path / "jarvis.csv", ["jid", "formula", "optb88vdw_bandgap"],
               [["JVASP-816", "Al", 0.0], ["JVASP-1002", "Si", 0.73], ["JVASP-23862", "NaCl", 5.0],
                ["JVASP-9", "Cu", "na"]])
    data = ds.bandgap_dataset(tmp_path / "jarvis.csv", structure_format="vasp")
    assert data.labels.tolist() == [0, 1, 2] and data.class_names == ["metal", "semiconductor", "insulator"]
    assert data.ids == ["JVASP-816", "JVASP-1002", "JVASP-23862"]
    assert data.metadata["skipped_missing_value"] == 1 and data.metadata["gap_column"] == "optb88vdw_bandgap"
    strict = ds.bandgap_dataset(tmp_path / "jarvis.csv", semiconductor_below=0.5, structure_format="vasp")
    assert strict.labels.tolist() == [0, 2, 2]
    with pytest.raises(KeyError, match=r"jarvis\.csv.*'mbj_bandgap'"):
        ds.bandgap_dataset(tmp_path / "jarvis.csv", gap_column="mbj_bandgap")
    _write_csv(tmp_path / "oqmd.csv", ["entry_id", "band_gap"], [["4061", 1.5]])
    with pytest.raises(FileNotFoundError, match="4061"):
        ds.bandgap_dataset(tmp_path / "oqmd.csv", structure_pattern="{id}.cif")


# --------------------------------------------------------------------------- CIFAR-10
def _write_cifar(root: Path, per_batch: int = 2) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    first = None
    for k, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        first = data if first is None else first
        batch = {b"batch_label": name.encode(), b"labels": [(k + j) % 10 for j in range(per_batch)],
                 b"data": data, b"filenames": [f"img{j}.png".encode() for j in range(per_batch)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in ds.CIFAR10_CLASSES],
            b"num_vis": 3072}
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump(meta, fh)
    return first


def test_cifar10_python_layout(tmp_path):
    first = _write_cifar(tmp_path)
    x, y, names = ds.load_cifar10(tmp_path, train=True)
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.tolist()[:4] == [0, 1, 1, 2]
    assert names[0] == "airplane" and names[9] == "truck"
    # channel-planar rows: R plane, then G, then B, each 32x32 row-major
    assert x[0, 0, 0, 1] == pytest.approx(first[0, 1] / 255)
    assert x[0, 1, 2, 3] == pytest.approx(first[0, 1024 + 2 * 32 + 3] / 255)
    test = ds.cifar10_dataset(tmp_path / "cifar-10-batches-py", train=False)
    assert len(test) == 2 and test[0][0].shape == (3, 32, 32)
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        ds.load_cifar10(tmp_path)


# --------------------------------------------------------------------------- ImageDataset cache
def test_image_dataset_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    data = ImageDataset(images, [0, 1, 1, 0, 1], ["a", "b"], ids=list("vwxyz"), metadata={"k": 1.5})
    path = data.save(tmp_path / "cache" / "set")
    assert path.name == "set.npz" and [p.name for p in path.parent.iterdir()] == ["set.npz"]
    back = ImageDataset.load(path)
    assert back.images.tobytes() == images.tobytes() and back.labels.tolist() == [0, 1, 1, 0, 1]
    assert back.class_names == ["a", "b"] and back.ids == list("vwxyz") and back.metadata == {"k": 1.5}
    img, label = back[2]
    assert img.shape == (3, 8, 8) and label == 1 and torch.equal(img, image_to_tensor(images[2]))
    x, y = back.tensors()
    assert x.shape == (5, 3, 8, 8) and y.dtype == torch.int64
    assert back.class_counts() == {"a": 2, "b": 3} and len(back.subset([0, 4])) == 2
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(images, [0, 1, 2, 0, 1], ["a", "b"])
    np.savez(tmp_path / "partial.npz", images=images)
    with pytest.raises(KeyError, match=r"partial\.npz.*labels"):
        ImageDataset.load(tmp_path / "partial.npz")
    with pytest.raises(FileNotFoundError, match="absent.npz"):
        ImageDataset.load(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- generator
def _generator_module():
    path = ROOT / "datasets" / "generate_dipole_images.py"
    spec = importlib.util.spec_from_file_location("generate_dipole_images", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generator_end_to_end(tmp_path, capsys):
    gen = _generator_module()
    out = tmp_path / "dip"
    assert gen.main(["--n", "12", "--out", str(out), "--seed", "3", "--workers", "2", "--quiet"]) == 0
    data = ImageDataset.load(out / "images.npz")
    assert len(data) == 12 and data.images.shape == (12, 32, 32, 3)
    assert data.class_names == ["weakly_polar", "strongly_polar"]
    assert data.metadata["n_kept"] == 12 and data.metadata["threshold_debye"] == 3.0
    dip = np.array(data.metadata["dipoles_debye"])
    assert np.array_equal(data.labels, (dip >= 3.0).astype(int)) and np.all(dip >= 0)
    assert (out / "legend.png").is_file() and (out / "legend.json").is_file()
    rows = list(csv.DictReader(open(out / "molecules.csv")))
    assert len(rows) == 12 and rows[0]["id"] == data.ids[0]
    assert "skipped 0" in capsys.readouterr().out


def test_generator_reports_skipped(tmp_path, capsys, monkeypatch):
    gen = _generator_module()
    import dequiformer.imaging.molecules as molecules

    real = molecules.xtb_dipole
    calls = {"n": 0}

    def flaky(numbers, positions, charge=0, uhf=None):
        calls["n"] += 1
        if calls["n"] % 3 == 0:
            raise RuntimeError("SCF not converged")
        return real(numbers, positions, charge, uhf)

    monkeypatch.setattr(molecules, "xtb_dipole", flaky)
    out = tmp_path / "dip"
    assert gen.main(["--n", "4", "--out", str(out), "--workers", "1", "--quiet", "--size", "16"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_kept"] == 4 and summary["n_failed"] == len(summary["failures"]["xtb_failed"]) >= 1
    assert "SCF not converged" in summary["failures"]["xtb_failed"][0]["error"]
    assert f"skipped {summary['n_failed']}" in capsys.readouterr().out
    assert ImageDataset.load(out / "images.npz").image_size == (16, 16)
