"""Readers for sGDML-layout npz files (MD17, MD22, CCSD(T) MD17) and revised MD17 (rMD17).

sGDML layout (http://sgdml.org, quantum-machine.org): ``R`` [T, N, 3] Angstrom, ``z`` [N],
``E`` [T, 1] kcal/mol, ``F`` [T, N, 3] kcal/mol/A; optional string keys such as ``name``,
``theory``, ``md5``, ``type``, ``r_unit``, ``e_unit``.

rMD17 layout (Christensen & von Lilienfeld, figshare): ``nuclear_charges`` [N],
``coords`` [T, N, 3] Angstrom, ``energies`` [T] kcal/mol, ``forces`` [T, N, 3]
kcal/mol/A; optional ``old_indices``, ``old_energies``, ``old_forces``.

Arrays are loaded into memory once and frames are cut from them on demand.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..units import units_for_format
from .frames import DataError, Frame, FrameDataset, require_nonempty

SGDML_KEYS = ("R", "z", "E", "F")
RMD17_KEYS = ("coords", "nuclear_charges", "energies", "forces")
_SGDML_META = ("name", "theory", "md5", "type", "r_unit", "e_unit", "code_version")


class NpzFrameStore:
    """Frames of a single molecule cut on demand from stacked arrays (no copy of the stack).

    positions [T, N, 3], numbers [N], energies [T], forces [T, N, 3].
    """

    def __init__(self, positions: np.ndarray, numbers: np.ndarray, energies: np.ndarray,
                 forces: np.ndarray, name: str | None = None) -> None:
        self.positions = positions
        self.numbers = numbers
        self.energies = energies
        self.forces = forces
        self.name = name

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def __getitem__(self, i: int) -> Frame:
        info = {"index": int(i)}
        if self.name:
            info["name"] = self.name
        return Frame(
            positions=np.array(self.positions[i], dtype=np.float64),
            numbers=self.numbers.copy(),
            cell=None,
            pbc=np.zeros(3, dtype=bool),
            energy=float(self.energies[i]),
            forces=np.array(self.forces[i], dtype=np.float64),
            info=info,
        )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError
        raise DataError(f"{path}: cannot read as an npz archive ({exc})") from exc
    out: dict[str, np.ndarray] = {}
    with npz:
        for key in npz.files:
            try:
                out[key] = npz[key]
            except ValueError:
                # object arrays (pickled metadata) are not needed and not loaded
                continue
    return out


def _require(arrays: dict, keys: tuple[str, ...], path: Path, layout: str) -> None:
    for key in keys:
        if key not in arrays:
            raise DataError(f"{path}: missing key {key!r} required by the {layout} layout "
                            f"(file has keys {sorted(arrays)})")


def _first_bad_frame(values: np.ndarray) -> int | None:
    flat = values.reshape(values.shape[0], -1)
    bad = ~np.isfinite(flat).all(axis=1)
    return int(np.argmax(bad)) if bad.any() else None


def _check_arrays(path: Path, keys: dict[str, str], R: np.ndarray, z: np.ndarray, E: np.ndarray,
                  F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validate stacked arrays; ``keys`` maps role (R, z, E, F) to the file's key name."""
    if R.ndim != 3 or R.shape[2] != 3:
        raise DataError(f"{path}: key {keys['R']!r} has shape {R.shape}, expected (T, N, 3)")
    T, N = R.shape[0], R.shape[1]
    require_nonempty(T, str(path))
    z = np.asarray(z)
    if z.ndim == 2 and z.shape[0] == T and np.all(z == z[:1]):
        z = z[0]  # some converters store z per frame; a single molecule repeats it
    if z.shape != (N,):
        raise DataError(f"{path}: key {keys['z']!r} has shape {z.shape}, expected ({N},) to match "
                        f"{keys['R']!r} {R.shape}")
    if not np.issubdtype(z.dtype, np.integer):
        if not np.all(np.asarray(z) == np.round(z)):
            raise DataError(f"{path}: key {keys['z']!r} holds non-integer atomic numbers")
    z = z.astype(np.int64)
    if np.any(z <= 0) or np.any(z > 118):
        raise DataError(f"{path}: key {keys['z']!r} holds atomic numbers outside 1..118")
    E = np.asarray(E, dtype=np.float64)
    if E.shape in ((T,), (T, 1)):
        E = E.reshape(T)
    else:
        raise DataError(f"{path}: key {keys['E']!r} has shape {E.shape}, expected ({T}, 1) or ({T},)")
    if F.shape != R.shape:
        raise DataError(f"{path}: key {keys['F']!r} has shape {F.shape}, expected {R.shape} "
                        f"(same as {keys['R']!r})")
    for role, arr, what in (("R", R, "positions"), ("E", E, "energy label"), ("F", F, "force label")):
        bad = _first_bad_frame(arr if arr.ndim > 1 else arr[:, None])
        if bad is not None:
            raise DataError(f"{path}: frame {bad}: {what} {keys[role]!r} is NaN or inf")
    return R, z, E, F


def _meta_string(value: np.ndarray) -> str:
    try:
        return str(value.item()) if value.size == 1 else str(value.tolist())
    except Exception:
        return str(value)


def read_md17(path: str | Path) -> FrameDataset:
    """Read an sGDML-layout npz (MD17, MD22, CCSD(T) train/test files).

    Returns a lazily cut :class:`FrameDataset` with units kcal/mol and Angstrom;
    ``dataset.meta`` holds the string keys (``name``, ``theory``, ...) when present.
    """
    path = Path(path)
    arrays = _load_npz(path)
    _require(arrays, SGDML_KEYS, path, "sGDML/MD17")
    keys = {k: k for k in SGDML_KEYS}
    R, z, E, F = _check_arrays(path, keys, arrays["R"], arrays["z"], arrays["E"], arrays["F"])
    meta = {k: _meta_string(arrays[k]) for k in _SGDML_META if k in arrays}
    store = NpzFrameStore(R, z, E, F, name=meta.get("name"))
    return FrameDataset(store, units=units_for_format("md17"), source=str(path), format="md17",
                        validate=False, meta=meta)


def read_rmd17(path: str | Path) -> FrameDataset:
    """Read a revised-MD17 npz (keys ``nuclear_charges``, ``coords``, ``energies``, ``forces``).

    Units kcal/mol and Angstrom. ``dataset.meta["old_indices"]`` holds the original MD17
    frame indices when the file has them.
    """
    path = Path(path)
    arrays = _load_npz(path)
    _require(arrays, RMD17_KEYS, path, "rMD17")
    keys = {"R": "coords", "z": "nuclear_charges", "E": "energies", "F": "forces"}
    R, z, E, F = _check_arrays(path, keys, arrays["coords"], arrays["nuclear_charges"],
                               arrays["energies"], arrays["forces"])
    meta: dict = {}
    if "old_indices" in arrays:
        meta["old_indices"] = np.asarray(arrays["old_indices"]).astype(np.int64)
    store = NpzFrameStore(R, z, E, F, name=path.stem)
    return FrameDataset(store, units=units_for_format("rmd17"), source=str(path), format="rmd17",
                        validate=False, meta=meta)


def npz_layout(path: str | Path) -> str:
    """``"md17"`` or ``"rmd17"`` from the keys of an npz file; :class:`DataError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = set(npz.files)
    except Exception as exc:
        raise DataError(f"{path}: cannot read as an npz archive ({exc})") from exc
    if {"R", "z"} <= files:
        return "md17"
    if {"coords", "nuclear_charges"} <= files:
        return "rmd17"
    raise DataError(f"{path}: npz keys {sorted(files)} match neither the sGDML/MD17 layout "
                    f"{list(SGDML_KEYS)} nor the rMD17 layout {list(RMD17_KEYS)}")
