"""Reader and writer for OC20 S2EF "legacy" LMDB files (fairchem v1 ``LmdbDataset`` layout).

Layout: one ``*.lmdb`` file (an LMDB environment opened with ``subdir=False``) or a folder of
them. Keys are ascii integers ``b"0"``, ``b"1"``, ...; each value is a pickled
``torch_geometric.data.Data`` with fields ``pos`` [N, 3] (Angstrom), ``atomic_numbers`` [N]
(float in OC20), ``cell`` [1, 3, 3], ``natoms``, ``tags`` [N] (0 subsurface, 1 surface,
2 adsorbate), ``fixed`` [N], energy ``y`` (or ``energy``, eV), forces ``force`` (or ``forces``,
eV/A) [N, 3], ``sid``, ``fid``. A ``b"length"`` key holds the pickled entry count.

Pickles are decoded without importing torch_geometric classes: every ``torch_geometric``
(and ``torch_sparse``) class is replaced by a plain record, so ``Data`` objects pickled by
PyG >= 2 (fields in ``_store``) and by PyG < 2 (fields directly in ``__dict__``) both load,
whatever PyG version is installed.
"""
from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable, Sequence

import lmdb
import numpy as np

from ..units import units_for_format
from .frames import DataError, Frame, FrameDataset, require_nonempty, validate_frame
from .handles import release, shared_handle

ENERGY_KEYS = ("y", "energy")
FORCE_KEYS = ("force", "forces")
_STUB_MODULES = ("torch_geometric", "torch_sparse")


class _PickledRecord:
    """Stand-in for a torch_geometric class met while unpickling; keeps the pickled state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "_PickledRecord":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if isinstance(state, Mapping):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state


_STUBS: dict[tuple[str, str], type] = {}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in _STUB_MODULES:
            key = (module, name)
            if key not in _STUBS:
                _STUBS[key] = type(name, (_PickledRecord,), {"__module__": module})
            return _STUBS[key]
        return super().find_class(module, name)


def unpickle_data(raw: bytes) -> dict[str, Any]:
    """Decode one pickled ``Data`` (PyG 1.x or 2.x) or plain dict into a field dict."""
    obj = _DataUnpickler(io.BytesIO(raw)).load()
    if isinstance(obj, Mapping):
        return dict(obj)
    state = getattr(obj, "__dict__", None)
    if not isinstance(state, dict):
        raise DataError(f"pickled object of type {type(obj).__name__} is not a Data object or a dict")
    store = state.get("_store")
    if store is not None:  # PyG >= 2.0: fields live in a GlobalStorage's _mapping
        mapping = getattr(store, "__dict__", {}).get("_mapping")
        if not isinstance(mapping, Mapping):
            raise DataError("pickled Data has a '_store' without a '_mapping' of fields")
        return dict(mapping)
    # PyG < 2.0: the fields are the instance attributes themselves
    return {k: v for k, v in state.items() if not (k.startswith("__") and k.endswith("__"))}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _scalar(value: Any) -> Any:
    """int/float/str from a python scalar, a 1-element tensor/array, or a string."""
    if isinstance(value, (str, bytes)):
        return value.decode() if isinstance(value, bytes) else value
    arr = _to_numpy(value)
    if arr.size == 1:
        return arr.reshape(()).item()
    return arr.tolist()


def data_to_frame(fields: dict[str, Any], index: int, source: str,
                  energy_keys: Sequence[str] = ENERGY_KEYS, force_keys: Sequence[str] = FORCE_KEYS,
                  require_labels: bool = True) -> Frame:
    """Convert an OC20 ``Data`` field dict into a :class:`Frame` (eV, eV/A), with checks."""
    where = f"{source}: entry {index}"
    pos, numbers, cell, pbc = _geometry(fields, where)
    energy, energy_key, forces, force_key = _labels(fields, where, energy_keys, force_keys, require_labels)
    fixed = None
    if fields.get("fixed") is not None:
        fixed = _to_numpy(fields["fixed"]).reshape(-1).astype(bool)
    tags = None
    if fields.get("tags") is not None:
        tags = _to_numpy(fields["tags"]).reshape(-1).astype(np.int64)
    info: dict[str, Any] = {"index": int(index)}
    for key in ("sid", "fid"):
        if fields.get(key) is not None:
            info[key] = _scalar(fields[key])
    if isinstance(fields.get("system"), str):  # a description, e.g. the EMT generator's "O/Pt(111)-fcc"
        info["system"] = fields["system"]
    frame = Frame(positions=pos, numbers=numbers, cell=cell, pbc=pbc, energy=energy, forces=forces,
                  fixed=fixed, tags=tags, info=info)
    names = {"positions": "pos", "numbers": "atomic_numbers", "energy": energy_key or "y",
             "forces": force_key or "force"}
    return validate_frame(frame, index, source, names)


def _geometry(fields: dict[str, Any], where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Positions ``[N, 3]`` (A), atomic numbers ``[N]``, cell ``[3, 3]`` or None and pbc ``[3]`` of
    one entry, checked against each other (``natoms`` too, where present)."""
    for key in ("pos", "atomic_numbers"):
        if key not in fields or fields[key] is None:
            raise DataError(f"{where}: missing key {key!r} (entry has keys {sorted(fields)})")
    pos = _to_numpy(fields["pos"]).astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise DataError(f"{where}: key 'pos' has shape {pos.shape}, expected (N, 3)")
    n = pos.shape[0]
    z = _to_numpy(fields["atomic_numbers"]).reshape(-1)
    if z.shape != (n,):
        raise DataError(f"{where}: key 'atomic_numbers' has shape {z.shape}, expected ({n},) to match 'pos'")
    if not np.all(np.round(z) == z):
        raise DataError(f"{where}: key 'atomic_numbers' holds non-integer values")
    numbers = np.round(z).astype(np.int64)
    if "natoms" in fields and fields["natoms"] is not None:
        natoms = int(np.asarray(_to_numpy(fields["natoms"])).reshape(-1)[0])
        if natoms != n:
            raise DataError(f"{where}: key 'natoms' is {natoms} but 'pos' has {n} atoms")
    cell = None
    if fields.get("cell") is not None:
        cell = _to_numpy(fields["cell"]).astype(np.float64)
        if cell.shape == (1, 3, 3):
            cell = cell[0]
        if cell.shape != (3, 3):
            raise DataError(f"{where}: key 'cell' has shape {_to_numpy(fields['cell']).shape}, "
                            f"expected (1, 3, 3) or (3, 3)")
    if fields.get("pbc") is not None:
        pbc = _to_numpy(fields["pbc"]).astype(bool).reshape(-1)
        if pbc.shape == (1,):
            pbc = np.repeat(pbc, 3)
    else:
        pbc = np.full(3, cell is not None, dtype=bool)  # OC20 slabs are periodic in x, y, z
    return pos, numbers, cell, pbc


def _labels(fields: dict[str, Any], where: str, energy_keys: Sequence[str], force_keys: Sequence[str],
            require_labels: bool) -> tuple[float | None, str | None, np.ndarray | None, str | None]:
    """Energy (eV) and forces ``[N, 3]`` (eV/A) of one entry with the keys they came from (the
    first of ``energy_keys`` / ``force_keys`` present); missing ones are an error with
    ``require_labels``."""
    energy = None
    energy_key = next((k for k in energy_keys if fields.get(k) is not None), None)
    if energy_key is not None:
        e = _to_numpy(fields[energy_key]).astype(np.float64).reshape(-1)
        if e.size != 1:
            raise DataError(f"{where}: key {energy_key!r} has shape {_to_numpy(fields[energy_key]).shape}, "
                            f"expected a scalar energy")
        energy = float(e[0])
    forces = None
    force_key = next((k for k in force_keys if fields.get(k) is not None), None)
    if force_key is not None:
        forces = _to_numpy(fields[force_key]).astype(np.float64)
    if require_labels:
        if energy_key is None:
            raise DataError(f"{where}: missing energy key (looked for {list(energy_keys)}; "
                            f"entry has keys {sorted(fields)})")
        if force_key is None:
            raise DataError(f"{where}: missing forces key (looked for {list(force_keys)}; "
                            f"entry has keys {sorted(fields)})")
    return energy, energy_key, forces, force_key


def lmdb_files(path: str | Path, pattern: str = "*.lmdb") -> list[Path]:
    """The LMDB files behind ``path``: the file itself, or a folder's ``pattern`` files sorted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        files = sorted(p for p in path.glob(pattern) if p.is_file())
        if not files:
            raise DataError(f"{path}: folder holds no {pattern} files")
        return files
    return [path]


def _open_env(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), subdir=False, readonly=True, lock=False, readahead=False,
                         meminit=False, max_readers=1)
    except lmdb.Error as exc:
        raise DataError(f"{path}: cannot open as an LMDB file ({exc})") from exc


def open_lmdb(path: str | Path) -> lmdb.Environment:
    """Read-only, lock-free environment of an LMDB file, shared within the process."""
    return shared_handle(path, _open_env, lambda env: env.close())


class OC20LmdbStore:
    """Lazy random access to the entries of one or more OC20 LMDB files.

    Entry ``i`` of the store is the ``i``-th entry counting file by file. Environments are
    shared per file (see :mod:`.handles`), so the store pickles to DataLoader workers.
    """

    def __init__(self, paths: Sequence[Path], energy_keys: Sequence[str] = ENERGY_KEYS,
                 force_keys: Sequence[str] = FORCE_KEYS, require_labels: bool = True) -> None:
        self.paths = [Path(p) for p in paths]
        self.energy_keys = tuple(energy_keys)
        self.force_keys = tuple(force_keys)
        self.require_labels = require_labels
        self._keys: list[list[bytes] | int] = []
        for p in self.paths:
            with open_lmdb(p).begin() as txn:
                raw = txn.get(b"length")
                if raw is not None:
                    try:
                        self._keys.append(int(pickle.loads(raw)))
                    except Exception as exc:
                        raise DataError(f"{p}: key 'length' does not hold a pickled int ({exc})") from exc
                else:  # no length key: use the integer keys present
                    keys = [k for k in txn.cursor().iternext(keys=True, values=False) if k.isdigit()]
                    self._keys.append(sorted(keys, key=int))
        counts = [k if isinstance(k, int) else len(k) for k in self._keys]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[int, bytes]:
        """(file number, LMDB key) of store entry ``index``."""
        if index < 0 or index >= len(self):
            raise IndexError(f"entry {index} out of range for {len(self)} entries")
        f = int(np.searchsorted(self._offsets, index, side="right") - 1)
        local = index - int(self._offsets[f])
        keys = self._keys[f]
        key = f"{local}".encode("ascii") if isinstance(keys, int) else keys[local]
        return f, key

    def _where(self, index: int, f: int, key: bytes) -> str:
        if len(self.paths) == 1:
            return f"{self.paths[0]}: entry {index}"
        return f"{self.paths[f]}: entry {index} (key {key.decode()!r} of this file)"

    def __getitem__(self, index: int) -> Frame:
        f, key = self.locate(int(index))
        with open_lmdb(self.paths[f]).begin() as txn:
            raw = txn.get(key)
        if raw is None:
            raise DataError(f"{self._where(index, f, key)}: key {key.decode()!r} is missing from the LMDB")
        try:
            fields = unpickle_data(raw)
        except DataError as exc:
            raise DataError(f"{self._where(index, f, key)}: {exc}") from exc
        except Exception as exc:
            raise DataError(f"{self._where(index, f, key)}: corrupt entry, cannot unpickle "
                            f"({type(exc).__name__}: {exc})") from exc
        source = str(self.paths[f]) if len(self.paths) == 1 else f"{self.paths[f]} (key {key.decode()!r})"
        frame = data_to_frame(fields, index, source, self.energy_keys, self.force_keys, self.require_labels)
        if len(self.paths) > 1:
            frame.info["file"] = self.paths[f].name
        return frame

    def close(self) -> None:
        """Close the LMDB environments of this store's files (they reopen on the next access)."""
        for p in self.paths:
            release(p)


def read_oc20_lmdb(path: str | Path, skip_bad: bool = False, energy_keys: Sequence[str] = ENERGY_KEYS,
                   force_keys: Sequence[str] = FORCE_KEYS, require_labels: bool = True) -> FrameDataset:
    """Open an OC20 S2EF LMDB file or folder of ``*.lmdb`` files as a lazy dataset (eV, eV/A).

    Args:
        path: one ``.lmdb`` file or a folder of them (read in sorted name order).
        skip_bad: scan every entry now and leave out those that cannot be decoded or fail
            the checks; their count is ``dataset.skipped`` and their entry numbers
            ``dataset.skipped_indices``. Without it, a bad entry raises :class:`DataError`
            (naming file and entry) when it is read.
        energy_keys / force_keys: field names tried in order for the labels.
        require_labels: raise when an entry has no energy or no forces.
    """
    store = OC20LmdbStore(lmdb_files(path), energy_keys, force_keys, require_labels)
    require_nonempty(len(store), str(path), "entries")
    indices = None
    bad: list[int] = []
    if skip_bad:
        good: list[int] = []
        for i in range(len(store)):
            try:
                store[i]
            except (DataError, IndexError):
                bad.append(i)
            else:
                good.append(i)
        indices = good
        if not good:
            raise DataError(f"{path}: data set is empty: all {len(store)} entries are bad")
    return FrameDataset(store, units=units_for_format("oc20_lmdb"), source=str(path), format="oc20_lmdb",
                        indices=indices, skipped=len(bad), skipped_indices=bad, validate=False)


def frame_to_data_fields(frame: Frame, sid: Any = None, fid: Any = None) -> dict[str, Any]:
    """OC20-style field dict (torch tensors, OC20 dtypes) for one frame.

    ``pos`` float32 [N, 3], ``atomic_numbers`` float32 [N] (as in OC20), ``cell`` float32
    [1, 3, 3], ``natoms`` int, ``tags`` int64 [N], ``fixed`` float32 [N], ``y`` float (eV),
    ``force`` float32 [N, 3] (eV/A), ``sid``, ``fid``.
    """
    import torch

    n = frame.natoms
    cell = np.zeros((3, 3)) if frame.cell is None else np.asarray(frame.cell, dtype=float)
    fields: dict[str, Any] = {
        "pos": torch.tensor(np.asarray(frame.positions), dtype=torch.float32),
        "atomic_numbers": torch.tensor(np.asarray(frame.numbers), dtype=torch.float32),
        "cell": torch.tensor(cell, dtype=torch.float32).view(1, 3, 3),
        "natoms": int(n),
        "tags": torch.tensor(np.zeros(n) if frame.tags is None else np.asarray(frame.tags), dtype=torch.long),
        "fixed": torch.tensor(np.zeros(n) if frame.fixed is None else np.asarray(frame.fixed), dtype=torch.float32),
    }
    if frame.energy is not None:
        fields["y"] = float(frame.energy)
    if frame.forces is not None:
        fields["force"] = torch.tensor(np.asarray(frame.forces), dtype=torch.float32)
    if sid is not None:
        fields["sid"] = sid
    if fid is not None:
        fields["fid"] = fid
    return fields


def _as_data(fields: dict[str, Any]) -> Any:
    try:
        from torch_geometric.data import Data
    except ImportError:  # fall back to a plain dict, which the reader also accepts
        return dict(fields)
    return Data(**fields)


def write_oc20_lmdb(path: str | Path, entries: Iterable[dict[str, Any]],
                    map_size: int = 1 << 36) -> int:
    """Write field dicts (see :func:`frame_to_data_fields`) as an OC20 LMDB file, atomically.

    Each entry is pickled as a ``torch_geometric.data.Data`` under keys ``b"0"``, ``b"1"``, ...;
    a ``b"length"`` key holds the count. The file is written to ``<path>.tmp`` and renamed.
    Returns the number of entries written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    release(path)
    release(tmp)
    for stale in (tmp, Path(str(tmp) + "-lock")):
        if stale.exists():
            stale.unlink()
    env = lmdb.open(str(tmp), subdir=False, map_size=map_size, lock=False, meminit=False, map_async=False)
    count = 0
    try:
        txn = env.begin(write=True)
        for fields in entries:
            txn.put(f"{count}".encode("ascii"), pickle.dumps(_as_data(fields), protocol=pickle.HIGHEST_PROTOCOL))
            count += 1
            if count % 1000 == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"length", pickle.dumps(count, protocol=pickle.HIGHEST_PROTOCOL))
        txn.commit()
        env.sync(True)
    except BaseException:
        env.close()
        tmp.unlink(missing_ok=True)
        raise
    env.close()
    os.replace(tmp, path)
    Path(str(tmp) + "-lock").unlink(missing_ok=True)
    return count
