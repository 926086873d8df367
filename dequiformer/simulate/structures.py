"""Start structures from data set files (npz, OC20 LMDB, ASE db, extxyz) or any ASE-readable file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..data.readers import FrameDataset, detect_format, read_dataset

# reader options that accept structures without labels (a start structure needs none)
_LENIENT: dict[str, dict[str, Any]] = {
    "oc20_lmdb": {"require_labels": False},
    "ase_db": {"require_labels": False, "calc_fallback": True},
    "extxyz": {"require_labels": False, "calc_fallback": True},
}


def open_dataset(path: str | Path) -> FrameDataset | None:
    """The file as a :class:`FrameDataset` (labels optional), or None when no data set reader
    recognises it (then it may still be a structure file ASE reads).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure/data file not found: {path}")
    try:
        fmt = detect_format(path)
    except ValueError:
        return None
    return read_dataset(path, format=fmt, **_LENIENT.get(fmt, {}))


def check_frame_index(index: int, n: int, source: str | Path) -> int:
    """``index`` (negative counts from the end) as a non-negative index; IndexError naming the file."""
    if not -n <= index < n:
        raise IndexError(f"{source}: frame index {index} out of range (the file holds {n} frame(s))")
    return index % n


def load_structure(path: str | Path, frame: int = 0) -> Atoms:
    """Frame ``frame`` of ``path`` as ``ase.Atoms`` without a calculator.

    ``path`` is anything :func:`~dequiformer.data.readers.read_dataset` opens (positions in
    Angstrom; ``fixed`` atoms become ``FixAtoms``; OC20 tags are kept) or any file
    ``ase.io.read`` understands (POSCAR, CIF, .traj, ...).

    Raises:
        FileNotFoundError: no such file. IndexError: ``frame`` out of range (names file and index).
    """
    dataset = open_dataset(path)
    if dataset is not None:
        atoms = dataset[check_frame_index(int(frame), len(dataset), path)].to_atoms()
    else:
        import ase.io

        try:
            images = ase.io.read(str(path), index=":")
        except Exception as exc:
            raise ValueError(f"{path}: cannot read a structure from this file "
                             f"({type(exc).__name__}: {exc})") from None
        images = images if isinstance(images, list) else [images]
        if not images:
            raise ValueError(f"{path}: the file holds no structure")
        atoms = images[check_frame_index(int(frame), len(images), path)]
    atoms.calc = None
    return atoms


def periodic_volume(atoms: Atoms) -> float | None:
    """Cell volume (A^3) of a structure periodic in all three directions, else None."""
    return float(atoms.get_volume()) if np.all(atoms.pbc) else None


def require_stress(atoms: Atoms, calc: Any, what: str) -> None:
    """ValueError, naming ``what`` needs it, unless ``calc`` gives ``atoms`` a stress: a 3D-periodic
    structure and a calculator with a stress (for a DEQCalculator, a conservative model)."""
    if not np.all(atoms.pbc):
        raise ValueError(f"{what} needs a structure periodic in all three directions (pbc={atoms.pbc.tolist()})")
    if not getattr(calc, "conservative", "stress" in getattr(calc, "implemented_properties", ())):
        raise ValueError(f"{what} needs the stress: use a conservative model (model.forces: conservative)")
