"""Small-molecule pool and GFN2-xTB dipoles for the offline polar/non-polar image set.

Used by ``datasets/generate_dipole_images.py``. The pool is enumerated
combinatorially (no downloads): mono- and di-substituted benzenes (ortho/meta/para)
and pyridines (every 2,3 ... 3,5 pattern), substituted thiophenes, furans and pyrroles,
from a substituent list, amides from acyl x amine fragments, and X-(CH2)n-Y chains
(about 9,500 unique canonical SMILES), plus the 162 molecules of ASE's G2 set. Geometries come
from RDKit ETKDG (v3) + MMFF94 (UFF where MMFF lacks parameters); G2 molecules
keep their reference geometries. Dipoles are GFN2-xTB single points (tblite),
converted from e*bohr to Debye.

Everything here is importable by spawned worker processes (no torch import).
"""
from __future__ import annotations

import zlib
from typing import Any

import numpy as np

BOHR_PER_ANGSTROM = 1.0 / 0.52917721067
DEBYE_PER_AU = 2.541746
"""Debye per atomic unit of dipole (e*bohr)."""

SUBSTITUENTS = (
    "F", "Cl", "Br", "I", "C", "CC", "C(C)C", "C(C)(C)C", "O", "OC", "OCC", "N", "NC", "N(C)C",
    "C#N", "[N+](=O)[O-]", "C(=O)O", "C(=O)OC", "C(=O)N", "C(=O)NC", "C(=O)C", "C=O",
    "C(F)(F)F", "OC(F)(F)F", "S", "SC", "S(C)(=O)=O", "S(N)(=O)=O", "NC(C)=O", "C=C", "C#C",
    "CO", "CN", "c1ccccc1",
)
ACYL = ("[H]", "C", "CC", "CCC", "C(C)C", "c1ccccc1", "C(F)(F)F", "OC", "C=C", "C1CC1")
AMINES = ("N", "NC", "N(C)C", "NCC", "N(CC)CC", "N1CCCC1", "N1CCOCC1", "Nc1ccccc1", "NC(C)C")
CHAIN_ENDS = ("[H]", "F", "Cl", "Br", "O", "N", "C#N", "C(=O)O", "OC", "S", "C(=O)C", "N(C)C")


PYRIDINE_PAIRS = (
    "n1c({a})c({b})ccc1", "n1c({a})cc({b})cc1", "n1c({a})ccc({b})c1",  # 2,3 / 2,4 / 2,5
    "n1c({a})cccc1{b}", "n1cc({a})c({b})cc1", "n1cc({a})cc({b})c1",  # 2,6 / 3,4 / 3,5
)
"""Disubstituted pyridine templates; ordered (a, b) pairs, so 2-A-3-B and 2-B-3-A both appear."""
FIVE_RINGS = ("s1cccc1", "o1cccc1", "[nH]1cccc1")
"""Thiophene, furan, pyrrole; substituted at 2, 3 and 2,5 below."""
FIVE_RING_SITES = {
    "s1cccc1": ("s1c({a})ccc1", "s1cc({a})cc1", "s1c({a})ccc1{b}"),
    "o1cccc1": ("o1c({a})ccc1", "o1cc({a})cc1", "o1c({a})ccc1{b}"),
    "[nH]1cccc1": ("[nH]1c({a})ccc1", "[nH]1cc({a})cc1", "[nH]1c({a})ccc1{b}"),
}


def _raw_smiles() -> list[str]:
    """Un-canonicalised SMILES of every scaffold x substituent combination (with duplicates)."""
    raw: list[str] = []
    subs = SUBSTITUENTS
    for a in subs:
        raw += [f"c1ccc(cc1){a}", f"n1ccc(cc1){a}", f"c1ccnc(c1){a}"]
    for i, a in enumerate(subs):
        for b in subs[i:]:
            raw += [f"c1ccc({a})c({b})c1", f"c1cc({a})cc({b})c1", f"c1cc({a})ccc1{b}"]
    for acyl in ACYL:
        for amine in AMINES:
            raw.append(f"{amine}C(=O){acyl}")
    for i, x in enumerate(CHAIN_ENDS):
        for y in CHAIN_ENDS[i:]:
            for n in range(1, 7):
                raw.append(f"{x}{'C' * n}{y}")
    # Pyridines with two substituents: the ring N breaks the benzene symmetry, so each
    # position pattern and each order of the pair is a different molecule (and dipole).
    for template in PYRIDINE_PAIRS:
        raw += [template.format(a=a, b=b) for a in subs for b in subs]
    # Five-membered heteroaromatics: a different ring dipole and geometry from the six-rings.
    for ring in FIVE_RINGS:
        mono2, mono3, di25 = FIVE_RING_SITES[ring]
        raw.append(ring)
        for i, a in enumerate(subs):
            raw += [mono2.format(a=a), mono3.format(a=a)]
            raw += [di25.format(a=a, b=b) for b in subs[i:]]
    return raw


def enumerate_smiles() -> list[str]:
    """Canonical SMILES of the combinatorial pool, sorted and de-duplicated (~9,500 molecules).

    Scaffolds: mono- and di-substituted benzenes (o/m/p), mono- and di-substituted
    pyridines (all six 2,3 ... 3,5 patterns), 2-, 3- and 2,5-substituted thiophenes,
    furans and pyrroles, amides (acyl x amine) and X-(CH2)n-Y chains (n = 1..6).
    Every entry parses in RDKit; duplicates (e.g. 2,6-A,B = 2,6-B,A) are merged by
    canonical SMILES. The list is deterministic (sorted), so seeds reproduce pools.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    out = set()
    try:
        for smi in _raw_smiles():
            mol = Chem.MolFromSmiles(smi)
            if mol is not None:
                out.add(Chem.MolToSmiles(mol))
    finally:
        RDLogger.EnableLog("rdApp.*")
    return sorted(out)


def g2_names() -> list[str]:
    """Names of the molecules in ASE's G2 collection."""
    from ase.collections import g2

    return list(g2.names)


def molecule_seed(key: str, seed: int) -> int:
    """Per-molecule RNG seed that depends only on the molecule and the global seed."""
    return (zlib.crc32(key.encode()) ^ (seed * 2654435761)) % (2**31 - 1)


def embed_rdkit(smiles: str, seed: int, max_iters: int = 1000, uff_fallback: bool = True):
    """RDKit molecule of ``smiles`` with explicit H and one 3D conformer: ETKDG embedding (``seed``)
    then MMFF optimisation (UFF when MMFF lacks parameters and ``uff_fallback``).

    Raises ValueError for an unparsable SMILES and RuntimeError when embedding fails.
    """
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"RDKit ETKDG embedding failed for SMILES {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=max_iters)
    elif uff_fallback:
        AllChem.UFFOptimizeMolecule(mol, maxIters=max_iters)
    return mol


def embed_smiles(smiles: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ETKDG + MMFF (UFF fallback) geometry of ``smiles`` with explicit H: (Z [N], positions [N, 3] A)."""
    mol = embed_rdkit(smiles, seed)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return numbers, np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)


def xtb_dipole(numbers: np.ndarray, positions: np.ndarray, charge: int = 0, uhf: int | None = None) -> np.ndarray:
    """GFN2-xTB dipole (x, y, z, total) in Debye; positions in Angstrom.

    ``uhf`` (unpaired electrons) defaults to the parity of the electron count.
    Raises RuntimeError when the SCF fails.
    """
    from tblite.interface import Calculator

    numbers = np.asarray(numbers, dtype=np.int64)
    if uhf is None:
        uhf = int((numbers.sum() - charge) % 2)
    calc = Calculator("GFN2-xTB", numbers, np.asarray(positions, dtype=np.float64) * BOHR_PER_ANGSTROM,
                      charge=float(charge), uhf=int(uhf))
    calc.set("verbosity", 0)
    result = calc.singlepoint()
    vec = np.asarray(result.get("dipole"), dtype=np.float64) * DEBYE_PER_AU
    return np.array([vec[0], vec[1], vec[2], float(np.linalg.norm(vec))])


def compute_molecule(task: tuple[str, str, int, float, dict]) -> dict[str, Any]:
    """Worker: ``(kind, key, seed, cutoff, render_config)`` -> record with geometry, dipole and image.

    ``kind`` is ``"smiles"`` (key = SMILES) or ``"g2"`` (key = G2 name). The record has
    ``status`` "ok", "embed_failed" or "xtb_failed" (then ``error`` says why).
    """
    from .render import render_structure

    kind, key, seed, cutoff, render_config = task
    record: dict[str, Any] = {"id": f"{kind}:{key}", "kind": kind, "key": key, "status": "ok"}
    try:
        if kind == "smiles":
            numbers, positions = embed_smiles(key, molecule_seed(key, seed))
            uhf = None
        elif kind == "g2":
            from ase.collections import g2

            atoms = g2[key]
            numbers, positions = atoms.numbers.copy(), atoms.positions.copy()
            magmom = float(np.sum(atoms.get_initial_magnetic_moments()))
            uhf = int(round(abs(magmom))) if magmom else None
        else:
            raise ValueError(f"unknown molecule kind {kind!r}")
    except Exception as exc:
        record.update(status="embed_failed", error=f"{type(exc).__name__}: {exc}")
        return record
    try:
        dipole = xtb_dipole(numbers, positions, uhf=uhf)
        if not np.all(np.isfinite(dipole)):
            raise RuntimeError("non-finite dipole")
    except Exception as exc:
        record.update(status="xtb_failed", error=f"{type(exc).__name__}: {exc}")
        return record
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=positions)
    record.update(
        numbers=numbers, positions=positions, dipole=dipole, formula=atoms.get_chemical_formula(),
        image=render_structure(atoms, cutoff, render_config),
    )
    return record
