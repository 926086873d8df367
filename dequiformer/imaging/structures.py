"""Read structures (CIF, SDF/MOL, PDB, XYZ/extXYZ, POSCAR, ...) into ``ase.Atoms``.

SDF/MOL files are read with RDKit so that their property tags (``> <NAME>``
blocks, e.g. QMugs' ``DFT:DIPOLE``) come along; everything else goes through
``ase.io.read``. Positions are in Angstrom; periodic files keep their cell and pbc.
Every failure names the file (and the record index for multi-record files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

SDF_SUFFIXES = (".sdf", ".mol", ".sd")


class StructureReadError(ValueError):
    """A structure file exists but could not be parsed into atoms."""


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file not found: {path}")
    if not path.is_file():
        raise StructureReadError(f"structure path is not a file: {path}")
    return path


def atoms_from_rdkit(mol: Any, conf_id: int = -1, source: str = "<rdkit>") -> Atoms:
    """Convert an RDKit molecule with a 3D conformer into ``ase.Atoms`` (Angstrom, no pbc).

    ``source`` names the origin in error messages. Hydrogens are kept only if they
    are explicit atoms of ``mol``.
    """
    if mol.GetNumConformers() == 0:
        raise StructureReadError(f"{source}: molecule has no coordinates (no conformer)")
    numbers = [atom.GetAtomicNum() for atom in mol.GetAtoms()]
    if any(z < 1 for z in numbers):
        raise StructureReadError(f"{source}: molecule contains dummy atoms (Z=0)")
    positions = np.asarray(mol.GetConformer(conf_id).GetPositions(), dtype=np.float64)
    return Atoms(numbers=numbers, positions=positions, pbc=False)


def read_sdf(path: str | Path, sanitize: bool = False) -> list[tuple[Atoms, dict[str, str]]]:
    """Read every record of an SDF/MOL file with RDKit.

    Returns a list of ``(atoms, tags)``; ``tags`` maps each property name of the
    record (``> <NAME>``) to its raw string value, and ``"_Name"`` to the title
    line when it is not empty. Explicit hydrogens are kept. ``sanitize=False``
    (default) accepts valence-unusual records, since only elements and coordinates
    are needed.
    """
    from rdkit import Chem, RDLogger

    path = _check_file(path)
    RDLogger.DisableLog("rdApp.*")
    try:
        supplier = Chem.SDMolSupplier(str(path), removeHs=False, sanitize=sanitize)
        out = []
        for index, mol in enumerate(supplier):
            if mol is None:
                raise StructureReadError(f"could not parse record {index} of SDF file {path}")
            atoms = atoms_from_rdkit(mol, source=f"{path} record {index}")
            tags = {name: mol.GetProp(name) for name in mol.GetPropNames()}
            if mol.HasProp("_Name") and mol.GetProp("_Name").strip():
                tags["_Name"] = mol.GetProp("_Name").strip()
            atoms.info["sdf_tags"] = dict(tags)
            out.append((atoms, tags))
    except OSError as exc:
        raise StructureReadError(f"could not read SDF file {path}: {exc}") from exc
    finally:
        RDLogger.EnableLog("rdApp.*")
    if not out:
        raise StructureReadError(f"SDF file {path} contains no molecules")
    return out


def read_structures(path: str | Path, format: str | None = None) -> list[Atoms]:
    """Read every structure (frame/record/data block) in ``path``.

    ``format`` is an ``ase.io`` format name; by default it is guessed from the
    suffix (``.sdf``/``.mol`` use RDKit and attach tags as ``atoms.info["sdf_tags"]``).
    """
    path = _check_file(path)
    if format in ("sdf", "mol") or (format is None and path.suffix.lower() in SDF_SUFFIXES):
        return [atoms for atoms, _ in read_sdf(path)]
    import ase.io

    try:
        frames = ase.io.read(str(path), index=":", format=format)
    except Exception as exc:  # ase raises many different types for bad input
        raise StructureReadError(
            f"could not read structure file {path} (format {format or 'guessed from suffix'}): "
            f"{type(exc).__name__}: {exc}") from exc
    if isinstance(frames, Atoms):
        frames = [frames]
    frames = [f for f in frames if len(f) > 0]
    if not frames:
        raise StructureReadError(f"structure file {path} contains no atoms")
    return frames


def read_structure(path: str | Path, index: int = 0, format: str | None = None) -> Atoms:
    """Read one structure (record ``index``, default the first) from ``path``.

    Supported: CIF (``.cif``), SDF/MOL (RDKit), PDB (``.pdb``), XYZ/extXYZ, and
    any other format ``ase.io.read`` knows (pass ``format`` if the suffix is not
    enough, e.g. ``format="vasp"`` for ``POSCAR``). Raises ``FileNotFoundError``
    for a missing file and :class:`StructureReadError` for an unreadable one.
    """
    frames = read_structures(path, format=format)
    try:
        return frames[index]
    except IndexError:
        raise StructureReadError(
            f"structure file {path} has {len(frames)} record(s); index {index} does not exist"
        ) from None


def read_structure_with_tags(path: str | Path, index: int = 0) -> tuple[Atoms, dict[str, str]]:
    """``(atoms, tags)`` of one record; tags are the SDF properties (empty for other formats)."""
    path = _check_file(path)
    if path.suffix.lower() in SDF_SUFFIXES:
        records = read_sdf(path)
        try:
            return records[index]
        except IndexError:
            raise StructureReadError(
                f"SDF file {path} has {len(records)} record(s); index {index} does not exist"
            ) from None
    return read_structure(path, index=index), {}
