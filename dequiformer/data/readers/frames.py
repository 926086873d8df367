"""The reader-independent frame representation: :class:`Frame` and :class:`FrameDataset`.

Every reader turns its file into a :class:`FrameDataset`, a sequence of :class:`Frame`
objects in the file's own units (recorded in ``dataset.units``). Datasets are lazy where
the format allows it (LMDB, ASE databases, npz arrays): a frame is decoded only when it is
indexed, so a 2M-frame OC20 LMDB opens instantly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence, overload

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms


class DataError(ValueError):
    """Raised for missing, malformed or inconsistent data in a data set file."""


@dataclass
class Frame:
    """One labelled structure, as numpy arrays, in its data set's units.

    Attributes:
        positions: [N, 3] float, Angstrom.
        numbers: [N] int, atomic numbers.
        cell: [3, 3] float (rows are lattice vectors, Angstrom) or None for molecules.
        pbc: [3] bool, periodic directions.
        energy: total energy (data set energy unit: kcal/mol or eV) or None.
        forces: [N, 3] float (energy unit / Angstrom) or None.
        fixed: [N] bool, atoms held fixed (e.g. OC20 subsurface), or None.
        stress: [3, 3] float (energy unit / Angstrom^3, ASE's sign: positive is tensile) or None.
        tags: [N] int (OC20: 0 subsurface, 1 surface, 2 adsorbate) or None.
        info: free-form metadata: ``index`` (position in the source file) and, where
            the format has them, ``sid``, ``fid``, ``name``, key-value pairs.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray | None
    pbc: np.ndarray
    energy: float | None
    forces: np.ndarray | None
    fixed: np.ndarray | None = None
    tags: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    stress: np.ndarray | None = None

    @property
    def natoms(self) -> int:
        """Number of atoms N."""
        return int(len(self.numbers))

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` copy of the frame.

        Energy and forces (in the data set's units, no conversion) are attached as a
        ``SinglePointCalculator``; ``fixed`` becomes a ``FixAtoms`` constraint; ``tags`` are
        set; ``info`` is copied into ``atoms.info``.
        """
        atoms = Atoms(
            numbers=np.asarray(self.numbers, dtype=int),
            positions=np.asarray(self.positions, dtype=float),
            cell=None if self.cell is None else np.asarray(self.cell, dtype=float),
            pbc=np.asarray(self.pbc, dtype=bool),
        )
        if self.tags is not None:
            atoms.set_tags(np.asarray(self.tags, dtype=int))
        if self.fixed is not None and np.any(self.fixed):
            atoms.set_constraint(FixAtoms(indices=np.flatnonzero(np.asarray(self.fixed, dtype=bool))))
        atoms.info.update(self.info)
        results: dict[str, Any] = {}
        if self.energy is not None:
            results["energy"] = float(self.energy)
        if self.forces is not None:
            results["forces"] = np.asarray(self.forces, dtype=float)
        if self.stress is not None:
            results["stress"] = stress_to_voigt(self.stress)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        return atoms

    @classmethod
    def from_atoms(cls, atoms: Atoms, energy: float | None = None, forces: np.ndarray | None = None,
                   info: dict | None = None, stress: Any = None) -> "Frame":
        """Build a frame from ``ase.Atoms``; labels are given explicitly (no calculator call).

        A zero cell on a non-periodic structure becomes ``cell=None``; ``FixAtoms``
        constraints become ``fixed``; tags are kept when any is non-zero.
        """
        cell = np.array(atoms.cell[:], dtype=float)
        pbc = np.array(atoms.pbc, dtype=bool)
        if not pbc.any() and not np.any(cell):
            cell = None
        fixed = None
        for constraint in atoms.constraints:
            if isinstance(constraint, FixAtoms):
                if fixed is None:
                    fixed = np.zeros(len(atoms), dtype=bool)
                fixed[constraint.get_indices()] = True
        tags = np.array(atoms.get_tags(), dtype=int)
        return cls(
            positions=np.array(atoms.positions, dtype=float),
            numbers=np.array(atoms.numbers, dtype=int),
            cell=cell,
            pbc=pbc,
            energy=None if energy is None else float(energy),
            forces=None if forces is None else np.asarray(forces, dtype=float),
            fixed=fixed,
            tags=tags if tags.any() else None,
            info=dict(info or {}),
            stress=None if stress is None else stress_matrix(stress),
        )


def stress_matrix(value: Any) -> np.ndarray:
    """A stress label as a ``[3, 3]`` array from a 3x3 matrix, 9 values (row-major) or the 6
    Voigt components ``xx yy zz yz xz xy`` (ASE's order); other shapes raise ValueError."""
    a = np.asarray(value, dtype=float)
    if a.shape == (3, 3):
        return a.copy()
    if a.size == 9:
        return a.reshape(3, 3).copy()
    if a.size == 6:
        xx, yy, zz, yz, xz, xy = a.reshape(6)
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"a stress needs 9 values (3x3) or 6 (Voigt xx yy zz yz xz xy), got shape {a.shape}")


def stress_to_voigt(stress: np.ndarray) -> np.ndarray:
    """``[3, 3]`` -> ASE's Voigt order ``xx yy zz yz xz xy``."""
    s = np.asarray(stress, dtype=float)
    return np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def require_nonempty(n: int, source: str, what: str = "frames") -> None:
    """Raise :class:`DataError` when a freshly opened source holds no frames."""
    if n == 0:
        raise DataError(f"{source}: data set is empty (0 {what})")


def _shape_error(source: str, index: int, key: str, expected: str, got: tuple) -> DataError:
    return DataError(f"{source}: frame {index}: key {key!r} has shape {tuple(got)}, expected {expected}")


def validate_frame(frame: Frame, index: int, source: str, key_names: dict[str, str] | None = None) -> Frame:
    """Check shapes and finiteness of a frame; raise :class:`DataError` naming file, key and frame.

    ``key_names`` maps the frame fields (``positions``, ``energy``, ...) to the key names used
    by the file, so messages name what the user will find in it.
    """
    names = {"positions": "positions", "numbers": "numbers", "cell": "cell", "energy": "energy",
             "forces": "forces", "fixed": "fixed", "tags": "tags"}
    names.update(key_names or {})
    n = len(frame.numbers)
    if np.asarray(frame.numbers).ndim != 1:
        raise _shape_error(source, index, names["numbers"], "[N]", np.shape(frame.numbers))
    if n == 0:
        raise DataError(f"{source}: frame {index} has no atoms")
    if np.any(np.asarray(frame.numbers) <= 0) or np.any(np.asarray(frame.numbers) > 118):
        raise DataError(f"{source}: frame {index}: key {names['numbers']!r} holds atomic numbers outside 1..118")
    if np.shape(frame.positions) != (n, 3):
        raise _shape_error(source, index, names["positions"], f"({n}, 3)", np.shape(frame.positions))
    if not np.all(np.isfinite(frame.positions)):
        raise DataError(f"{source}: frame {index}: key {names['positions']!r} contains NaN or inf")
    if frame.cell is not None and np.shape(frame.cell) != (3, 3):
        raise _shape_error(source, index, names["cell"], "(3, 3)", np.shape(frame.cell))
    if np.shape(frame.pbc) != (3,):
        raise _shape_error(source, index, "pbc", "(3,)", np.shape(frame.pbc))
    if frame.energy is not None and not np.isfinite(frame.energy):
        raise DataError(f"{source}: frame {index}: energy label {names['energy']!r} is NaN or inf")
    if frame.forces is not None:
        if np.shape(frame.forces) != (n, 3):
            raise _shape_error(source, index, names["forces"], f"({n}, 3)", np.shape(frame.forces))
        if not np.all(np.isfinite(frame.forces)):
            raise DataError(f"{source}: frame {index}: force label {names['forces']!r} contains NaN or inf")
    if frame.stress is not None:
        if np.shape(frame.stress) != (3, 3):
            raise _shape_error(source, index, names.get("stress", "stress"), "(3, 3)", np.shape(frame.stress))
        if not np.all(np.isfinite(frame.stress)):
            raise DataError(f"{source}: frame {index}: stress label {names.get('stress', 'stress')!r} contains NaN or inf")
    for attr in ("fixed", "tags"):
        value = getattr(frame, attr)
        if value is not None and np.shape(value) != (n,):
            raise _shape_error(source, index, names[attr], f"({n},)", np.shape(value))
    return frame


class FrameDataset(Sequence[Frame]):
    """A sequence of :class:`Frame` objects read from one data source.

    Args:
        store: the backing storage: a list of frames, or any object with ``__len__`` and
            ``__getitem__(int) -> Frame`` that decodes on demand (LMDB, ASE db, npz arrays).
        units: ``{"energy": "kcal/mol" | "eV", "length": "Angstrom"}``.
        source: path of the file (or folder) the frames came from.
        format: reader format name (``md17``, ``rmd17``, ``oc20_lmdb``, ``ase_db``, ``extxyz``).
        indices: which store entries this dataset exposes (default: all, in order).
        skipped: number of corrupt entries skipped when the source was opened
            (``skip_bad=True``); ``skipped_indices`` lists them (source indices).
        validate: validate each frame when it is read (lazy stores).
    """

    def __init__(
        self,
        store: Sequence[Frame] | Any,
        *,
        units: dict[str, str],
        source: str,
        format: str,
        indices: Iterable[int] | np.ndarray | None = None,
        skipped: int = 0,
        skipped_indices: Sequence[int] = (),
        validate: bool = True,
        meta: dict | None = None,
    ) -> None:
        self._store = store
        self.units = dict(units)
        self.source = str(source)
        self.format = format
        self.skipped = int(skipped)
        self.skipped_indices = list(skipped_indices)
        self.validate = validate
        #: Format-specific extras, e.g. ``{"name": "aspirin", "theory": ...}`` for sGDML files.
        self.meta = dict(meta or {})
        if indices is None:
            self._indices = np.arange(len(store), dtype=np.int64)
        else:
            self._indices = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices,
                                       dtype=np.int64).reshape(-1)

    @classmethod
    def from_frames(cls, frames: Sequence[Frame], *, units: dict[str, str], source: str,
                    format: str = "frames", validate: bool = True) -> "FrameDataset":
        """List-backed dataset from in-memory frames (validated now when ``validate``)."""
        frames = list(frames)
        if validate:
            for i, frame in enumerate(frames):
                validate_frame(frame, i, str(source))
        return cls(frames, units=units, source=source, format=format, validate=False)

    def __len__(self) -> int:
        return int(len(self._indices))

    @overload
    def __getitem__(self, index: int) -> Frame: ...

    @overload
    def __getitem__(self, index: slice) -> "FrameDataset": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.subset(np.arange(len(self))[index])
        if isinstance(index, (np.integer, int)) and not isinstance(index, bool):
            i = int(index)
            if i < -len(self) or i >= len(self):
                raise IndexError(f"{self.source}: frame index {i} out of range for {len(self)} frames")
            store_index = int(self._indices[i])
            frame = self._store[store_index]
            if self.validate:
                validate_frame(frame, store_index, self.source)
            return frame
        return self.subset(index)

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def subset(self, indices: Iterable[int] | np.ndarray) -> "FrameDataset":
        """A view on some frames; ``indices`` are positions in this dataset (negative allowed)."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices).reshape(-1)
        if idx.dtype == bool:
            if len(idx) != len(self):
                raise IndexError(f"{self.source}: boolean mask has length {len(idx)}, dataset has {len(self)}")
            idx = np.flatnonzero(idx)
        if len(idx) and not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"{self.source}: subset indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        bad = (idx < -len(self)) | (idx >= len(self))
        if np.any(bad):
            raise IndexError(f"{self.source}: subset index {int(idx[bad][0])} out of range for {len(self)} frames")
        idx = np.where(idx < 0, idx + len(self), idx)
        return FrameDataset(
            self._store, units=self.units, source=self.source, format=self.format,
            indices=self._indices[idx], skipped=self.skipped, skipped_indices=self.skipped_indices,
            validate=self.validate, meta=self.meta,
        )

    @property
    def source_indices(self) -> np.ndarray:
        """[len] int64: position of each frame in the source file (after skipping bad entries)."""
        return self._indices.copy()

    def to_atoms_list(self) -> list[Atoms]:
        """All frames as ``ase.Atoms`` (see :meth:`Frame.to_atoms`)."""
        return [frame.to_atoms() for frame in self]

    def __repr__(self) -> str:
        extra = f", skipped={self.skipped}" if self.skipped else ""
        return (f"FrameDataset(format={self.format!r}, source={self.source!r}, frames={len(self)}, "
                f"units={self.units}{extra})")
