"""Dataset readers: MD17/MD22 (sGDML npz), rMD17, OC20 S2EF LMDB, ASE databases, extxyz.

All readers return a :class:`FrameDataset` of :class:`Frame` objects in the file's own
units (``dataset.units``). :func:`read_dataset` picks the reader from the file when no
format is given.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from .ase_db import is_ase_lmdb, read_ase_db
from .extxyz import read_extxyz
from .frames import DataError, Frame, FrameDataset, validate_frame
from .md17 import npz_layout, read_md17, read_rmd17
from .oc20_lmdb import frame_to_data_fields, read_oc20_lmdb, unpickle_data, write_oc20_lmdb

READERS: dict[str, Callable[..., FrameDataset]] = {
    "md17": read_md17,
    "rmd17": read_rmd17,
    "oc20_lmdb": read_oc20_lmdb,
    "ase_db": read_ase_db,
    "extxyz": read_extxyz,
}
FORMAT_ALIASES: dict[str, str] = {
    "md22": "md17", "sgdml": "md17", "npz": "md17",
    "revised_md17": "rmd17",
    "oc20": "oc20_lmdb", "lmdb": "oc20_lmdb", "s2ef": "oc20_lmdb",
    "aselmdb": "ase_db", "db": "ase_db", "ase": "ase_db",
    "xyz": "extxyz",
}

__all__ = [
    "DataError", "Frame", "FrameDataset", "READERS", "detect_format", "read_dataset", "read_md17",
    "read_rmd17", "read_oc20_lmdb", "read_ase_db", "read_extxyz", "write_oc20_lmdb",
    "frame_to_data_fields", "unpickle_data", "validate_frame",
]


def canonical_format(name: str) -> str:
    """Reader name for a format name or alias (``"md22"`` -> ``"md17"``); ValueError if unknown."""
    key = str(name).strip().lower().replace("-", "_")
    key = FORMAT_ALIASES.get(key, key)
    if key not in READERS:
        raise ValueError(f"unknown data format {name!r}; known formats: {sorted(READERS)} "
                         f"(aliases: {sorted(FORMAT_ALIASES)})")
    return key


def detect_format(path: str | Path) -> str:
    """Guess the reader format of ``path`` from its extension and, where ambiguous, its content.

    ``.npz`` -> ``md17`` or ``rmd17`` (by keys); ``.lmdb`` -> ``oc20_lmdb``, or ``ase_db`` when the
    file is an ASE LMDB; ``.aselmdb``/``.db``/``.json`` -> ``ase_db``; ``.xyz``/``.extxyz`` ->
    ``extxyz``; a folder -> by the files it holds.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        lmdbs = sorted(path.glob("*.lmdb"))
        if lmdbs:
            return "ase_db" if is_ase_lmdb(lmdbs[0]) else "oc20_lmdb"
        if any(path.glob("*.aselmdb")) or any(path.glob("*.db")):
            return "ase_db"
        raise ValueError(f"{path}: cannot detect the data format of this folder (no *.lmdb, *.aselmdb "
                         f"or *.db files); pass format= one of {sorted(READERS)}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return npz_layout(path)
    if suffix == ".lmdb":
        return "ase_db" if is_ase_lmdb(path) else "oc20_lmdb"
    if suffix in (".aselmdb", ".db", ".json"):
        return "ase_db"
    if suffix in (".xyz", ".extxyz"):
        return "extxyz"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        return npz_layout(path)
    raise ValueError(f"{path}: cannot detect the data format from the extension {suffix!r}; "
                     f"pass format= one of {sorted(READERS)}")


class UnknownReaderOption(TypeError, ValueError):
    """A reader option the format's reader does not take (a TypeError for callers that passed a
    wrong keyword, a ValueError for the commands that report bad input in one line)."""


def read_dataset(path: str | Path, format: str | None = None, **options: Any) -> FrameDataset:
    """Open a data set file (or folder) as a :class:`FrameDataset`.

    Args:
        path: file or folder.
        format: ``md17`` (sGDML npz, also MD22), ``rmd17``, ``oc20_lmdb``, ``ase_db``
            (``.db``, ``.aselmdb``), ``extxyz``, or an alias; detected from the file when None.
        **options: passed to the reader (e.g. ``skip_bad=True`` for OC20 LMDB,
            ``energy_key="REF_energy"`` for extxyz / ASE db).
    """
    path = Path(path)
    fmt = detect_format(path) if format is None else canonical_format(format)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if fmt in ("md17", "rmd17") and path.is_file():
        layout = npz_layout(path)
        if layout != fmt:
            raise DataError(f"{path}: format {format!r} was asked for, but the file has the {layout} layout; "
                            f"use format={layout!r} (or leave format unset)")
    reader = READERS[fmt]
    accepted = [p for p in inspect.signature(reader).parameters if p != "path"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnknownReaderOption(f"{path}: reader {fmt!r} does not accept option(s) {unknown}; accepted: {accepted}")
    return reader(path, **options)
