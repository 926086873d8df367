"""Start structures from data set files (npz, OC20 LMDB, ASE db, extxyz) or any ASE-readable file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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
