"""Reader for ASE databases: SQLite ``.db`` / ``.json`` (``ase.db``) and fairchem v2 ``.aselmdb``.

``.aselmdb`` files are LMDB environments (``subdir=False``) written by the
``ase-db-backends`` package (``ase_db_backends.aselmdb.LMDBDatabase``), which ASE >= 3.26
also reaches through ``ase.db.connect(path, type="aselmdb")``. Rows are zlib-compressed
JSON under integer keys, with reserved keys ``nextid``, ``deleted_ids`` and ``metadata``.
A folder of ``*.aselmdb`` files (as distributed for OMat24 / OMol25) reads as one data set.

Labels are the calculator results stored with each row (``energy`` in eV, ``forces`` in
eV/A) unless ``energy_key`` / ``forces_key`` name a key-value pair or a ``data`` entry.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..units import units_for_format
from .frames import DataError, Frame, FrameDataset, require_nonempty, stress_matrix, validate_frame
from .handles import cached_handle, shared_handle

def is_ase_lmdb(path: str | Path) -> bool:
    """True when ``path`` is an LMDB file written by the ASE LMDB backend (has a ``nextid`` key)."""
    import lmdb

    handle = cached_handle(path)
    if handle is not None and not isinstance(handle, lmdb.Environment):
        return True  # already open as an ASE database
    if handle is not None:
        env, owned = handle, False
    else:
        try:
            env = lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False)
        except lmdb.Error:
            return False
        owned = True
    try:
        with env.begin() as txn:
            return txn.get(b"nextid") is not None
    finally:
        if owned:
            env.close()


def _connect(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".aselmdb", ".lmdb"):
            try:
                from ase_db_backends.aselmdb import LMDBDatabase
            except ImportError:
                import ase.db

                return ase.db.connect(str(path), type="aselmdb", readonly=True)
            return LMDBDatabase(path, readonly=True, use_lock_file=False)
        import ase.db

        return ase.db.connect(str(path), type=suffix[1:] or "db", use_lock_file=False, create_indices=False)
    except (DataError, FileNotFoundError):
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot open as an ASE database ({type(exc).__name__}: {exc})") from exc


def _close(db: Any) -> None:
    if hasattr(db, "close"):
        db.close()


def _adopt(db: Any) -> Any:
    # A forked DataLoader worker cannot reopen an LMDB file its parent holds open; the
    # read-only environment it inherited works, so stop the backend from reopening it.
    if hasattr(db, "_env_pid"):
        db._env_pid = os.getpid()
    return db


def open_ase_db(path: str | Path) -> Any:
    """An ASE database object for ``path`` (read-only for LMDB), shared within the process."""
    return shared_handle(path, _connect, _close, _adopt)


def ase_db_files(path: str | Path) -> list[Path]:
    """The database files behind ``path``: the file itself, or a folder's ``*.aselmdb`` / ``*.db`` files."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.aselmdb") if p.is_file())
        if not files:
            files = sorted(p for p in path.glob("*.db") if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no *.aselmdb or *.db files")
        return files
    return [path]


def _row_ids(db: Any) -> list[int]:
    ids = getattr(db, "ids", None)  # the LMDB backend keeps its id list
    if ids is not None:
        return list(ids)
    return [row.id for row in db.select(include_data=False)]


def _lookup(row: Any, key: str) -> Any:
    kvp = row.get("key_value_pairs") or {}
    if key in kvp:
        return kvp[key]
    data = row.get("data") or {}
    if key in data:
        return data[key]
    return row.get(key)


class AseDbStore:
    """Lazy access to the rows of one or more ASE databases, in id order file by file."""

    def __init__(self, paths: Sequence[Path], energy_key: str | None = None, forces_key: str | None = None,
                 calc_fallback: bool = False, require_labels: bool = True) -> None:
        self.paths = [Path(p) for p in paths]
        self.energy_key = energy_key
        self.forces_key = forces_key
        self.calc_fallback = calc_fallback
        self.require_labels = require_labels
        self._ids: list[list[int]] = []
        for p in self.paths:
            self._ids.append(_row_ids(open_ase_db(p)))
        self._offsets = np.concatenate([[0], np.cumsum([len(i) for i in self._ids])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _label(self, row: Any, atoms: Any, key: str | None, prop: str, where: str) -> Any:
        calc_value = atoms.calc.results.get(prop) if atoms.calc is not None else None
        if key is None:
            return calc_value
        value = _lookup(row, key)
        if value is None and self.calc_fallback:
            value = calc_value
        if value is None and self.require_labels:
            raise DataError(f"{where}: missing key {key!r} (not in key_value_pairs, data or row)"
                            + ("" if self.calc_fallback else "; pass calc_fallback=True to use calculator results"))
        return value

    def __getitem__(self, index: int) -> Frame:
        index = int(index)
        if index < 0 or index >= len(self):
            raise IndexError(f"entry {index} out of range for {len(self)} rows")
        f = int(np.searchsorted(self._offsets, index, side="right") - 1)
        row_id = self._ids[f][index - int(self._offsets[f])]
        where = f"{self.paths[f]}: row {index} (id {row_id})"
        try:
            row = open_ase_db(self.paths[f]).get(id=row_id)
            atoms = row.toatoms()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{where}: cannot read row ({type(exc).__name__}: {exc})") from exc
        energy = self._label(row, atoms, self.energy_key, "energy", where)
        forces = self._label(row, atoms, self.forces_key, "forces", where)
        if self.require_labels and energy is None:
            raise DataError(f"{where}: missing energy (no calculator result 'energy'; set energy_key)")
        if self.require_labels and forces is None:
            raise DataError(f"{where}: missing forces (no calculator result 'forces'; set forces_key)")
        info = {"index": index, "id": int(row_id)}
        info.update(row.get("key_value_pairs") or {})
        if len(self.paths) > 1:
            info["file"] = self.paths[f].name
        if energy is not None:
            e = np.asarray(energy, dtype=float).reshape(-1)
            if e.size != 1:
                raise DataError(f"{where}: energy key {self.energy_key or 'energy'!r} has shape "
                                f"{np.shape(energy)}, expected a scalar")
            energy = float(e[0])
        stress = atoms.calc.results.get("stress") if atoms.calc is not None else None
        if stress is not None:  # the row's stored stress (eV/A^3, Voigt), where it has one
            try:
                stress = stress_matrix(stress)
            except ValueError as exc:
                raise DataError(f"{where}: stress: {exc}") from None
        frame = Frame.from_atoms(atoms, energy=energy,
                                 forces=None if forces is None else np.asarray(forces, dtype=float), info=info,
                                 stress=stress)
        names = {"energy": self.energy_key or "energy", "forces": self.forces_key or "forces"}
        return validate_frame(frame, index, str(self.paths[f]), names)


def read_ase_db(path: str | Path, energy_key: str | None = None, forces_key: str | None = None,
                calc_fallback: bool = False, require_labels: bool = True) -> FrameDataset:
    """Open an ASE database (``.db``, ``.json``, ``.aselmdb``, or a folder of them) lazily (eV, eV/A).

    Args:
        energy_key / forces_key: key-value-pair or ``data`` key holding the labels; None uses
            the stored calculator results (``energy``, ``forces``).
        calc_fallback: when a configured key is missing from a row, use its calculator results.
        require_labels: raise :class:`DataError` for rows without energy or forces.
    """
    store = AseDbStore(ase_db_files(path), energy_key, forces_key, calc_fallback, require_labels)
    require_nonempty(len(store), str(path), "rows")
    return FrameDataset(store, units=units_for_format("ase_db"), source=str(path), format="ase_db", validate=False)
