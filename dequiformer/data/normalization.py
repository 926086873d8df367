"""Label normalisation fitted on training frames, serialisable into checkpoints.

A model learns normalised targets

    e_hat = (E - shift) / scale,        f_hat = F / scale,
    shift = sum_el count_el * ref_el    (per structure),

and predictions are mapped back with ``E = e_hat * scale + shift``, ``F = f_hat * scale``.
Energy and force share one ``scale`` so that forces stay the negative gradient of the
energy in normalised units. Everything is in the training data's units: ``shift`` and
``scale`` in the energy unit (kcal/mol or eV), ``force_rms`` in energy unit per Angstrom.

Modes for the shift:
- ``per_atom``: every element's reference is the mean per-atom energy mean(E / N), so
  ``shift = N * mean``.
- ``linear_reference``: per-element references from least squares ``E ~ counts @ ref``
  (minimum-norm solution when compositions are collinear, e.g. a single molecule).
- ``none``: no shift.

Choices for ``scale``: ``energy_std`` (std of E - shift over structures; the Equiformer
convention), ``force_rms`` (RMS of force components; MACE/NequIP), ``per_atom_std`` (std of
(E - shift) / N), ``none`` (1.0), or a number.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .readers.frames import Frame

MODES = ("per_atom", "linear_reference", "none")
SCALES = ("energy_std", "force_rms", "per_atom_std", "none")


def _is_torch(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "dtype") and type(x).__module__.startswith("torch")


@dataclass
class Normalizer:
    """Fitted shift/scale statistics (see module docstring); units are the training units.

    Attributes:
        mode: ``per_atom``, ``linear_reference`` or ``none``.
        elements: atomic numbers, the column order of species counts.
        references: per-element energy reference (energy unit per atom), aligned with ``elements``.
        scale: energy scale (energy unit), also the force scale (energy unit / A).
        scale_source: which statistic ``scale`` came from.
        per_atom_mean: mean of E / N over training frames (energy unit).
        energy_std: std of E - shift (energy unit); per_atom_std: std of (E - shift) / N.
        force_rms: RMS of force components (energy unit / A), 0.0 when no forces.
        units: ``{"energy": ..., "length": "Angstrom"}`` of the data it was fitted on.
        n_frames: number of frames fitted on.
    """

    mode: str = "none"
    elements: list[int] = field(default_factory=list)
    references: list[float] = field(default_factory=list)
    scale: float = 1.0
    scale_source: str = "none"
    per_atom_mean: float = 0.0
    energy_std: float = 1.0
    per_atom_std: float = 1.0
    force_rms: float = 1.0
    units: dict = field(default_factory=lambda: {"energy": "eV", "length": "Angstrom"})
    n_frames: int = 0

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain python (JSON/YAML/torch.save friendly) dict."""
        out = asdict(self)
        out["elements"] = [int(z) for z in self.elements]
        out["references"] = [float(r) for r in self.references]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalizer":
        """Inverse of :meth:`to_dict`; unknown keys are rejected with their names."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"normalizer dict has unknown keys {unknown}; known: {sorted(known)}")
        norm = cls(**{k: v for k, v in data.items()})
        if norm.mode not in MODES:
            raise ValueError(f"normalizer mode {norm.mode!r} is not one of {MODES}")
        if len(norm.elements) != len(norm.references):
            raise ValueError(f"normalizer has {len(norm.elements)} elements but {len(norm.references)} references")
        return norm

    # ------------------------------------------------------------------ application
    def species_counts(self, numbers: Any, batch: Any = None, num_graphs: int | None = None) -> Any:
        """Counts [B, n_elements] in this normalizer's element order (see :func:`species_counts`)."""
        return species_counts(numbers, self.elements, batch=batch, num_graphs=num_graphs)

    def shift(self, counts: Any) -> Any:
        """Per-structure energy shift [B] = counts [B, n_el] @ references (energy unit)."""
        if not self.elements:  # identity normaliser: nothing to shift by
            if _is_torch(counts):
                return _torch().zeros(counts.shape[:-1], dtype=_torch().float64, device=counts.device)
            return np.zeros(np.shape(counts)[:-1])
        if counts.shape[-1] != len(self.elements):
            raise ValueError(f"species counts have {counts.shape[-1]} columns, normalizer has "
                             f"{len(self.elements)} elements {self.elements}")
        if _is_torch(counts):
            torch = _torch()
            dtype = counts.dtype if counts.is_floating_point() else torch.float64
            refs = torch.as_tensor(self.references, dtype=dtype, device=counts.device)
            return counts.to(dtype) @ refs
        return np.asarray(counts, dtype=np.float64) @ np.asarray(self.references, dtype=np.float64)

    def normalize_energy(self, energy: Any, counts: Any) -> Any:
        """(E - shift) / scale for per-structure energies [B] (numpy or torch)."""
        shift = self.shift(counts)
        if _is_torch(energy):
            shift = _as_like(shift, energy)
        return (energy - shift) / self.scale

    def denormalize_energy(self, energy: Any, counts: Any) -> Any:
        """e_hat * scale + shift: model output [B] back to the training energy unit."""
        shift = self.shift(counts)
        if _is_torch(energy):
            shift = _as_like(shift, energy)
        return energy * self.scale + shift

    def normalize_forces(self, forces: Any) -> Any:
        """F / scale for forces [N, 3]."""
        return forces / self.scale

    def denormalize_forces(self, forces: Any) -> Any:
        """f_hat * scale: model forces [N, 3] back to energy unit / A."""
        return forces * self.scale


def _torch():
    import torch

    return torch


def _as_like(value: Any, like: Any) -> Any:
    torch = _torch()
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def species_counts(numbers: Any, elements: Sequence[int], batch: Any = None,
                   num_graphs: int | None = None) -> Any:
    """Count atoms of each element per structure.

    Args:
        numbers: either a list of per-structure atomic-number arrays, or one flat [N] array
            / tensor together with ``batch`` [N] (structure index of each atom).
        elements: atomic numbers defining the columns.
        batch: [N] graph index per atom for flat input (None: a single structure).
        num_graphs: number of structures B for flat input (default ``batch.max() + 1``).

    Returns:
        [B, len(elements)] counts: an int64 numpy array, or a torch tensor for torch input.
        Raises ValueError for an atomic number not in ``elements``.
    """
    elements = [int(z) for z in elements]
    if isinstance(numbers, (list, tuple)) and batch is None:
        return np.stack([species_counts(np.asarray(n), elements)[0] for n in numbers]) if numbers else \
            np.zeros((0, len(elements)), dtype=np.int64)
    if _is_torch(numbers):
        torch = _torch()
        lookup = torch.full((119,), -1, dtype=torch.long, device=numbers.device)
        lookup[torch.as_tensor(elements, dtype=torch.long, device=numbers.device)] = torch.arange(
            len(elements), device=numbers.device)
        cols = lookup[numbers.long()]
        if bool((cols < 0).any()):
            bad = int(numbers[cols < 0][0])
            raise ValueError(f"element Z={bad} is not among the normalizer elements {elements}")
        if batch is None:
            batch = torch.zeros_like(cols)
        b = int(num_graphs) if num_graphs is not None else (int(batch.max()) + 1 if len(batch) else 0)
        out = torch.zeros((b, len(elements)), dtype=torch.long, device=numbers.device)
        out.index_put_((batch.long(), cols), torch.ones_like(cols), accumulate=True)
        return out
    numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
    lookup = np.full(119, -1, dtype=np.int64)
    lookup[np.asarray(elements, dtype=np.int64)] = np.arange(len(elements))
    if len(numbers) and (numbers.min() < 0 or numbers.max() > 118):
        raise ValueError(f"atomic numbers outside 0..118 in species counts: {numbers.min()}..{numbers.max()}")
    cols = lookup[numbers]
    if np.any(cols < 0):
        raise ValueError(f"element Z={int(numbers[cols < 0][0])} is not among the normalizer elements {elements}")
    batch = np.zeros(len(numbers), dtype=np.int64) if batch is None else np.asarray(batch, dtype=np.int64).reshape(-1)
    b = int(num_graphs) if num_graphs is not None else (int(batch.max()) + 1 if len(batch) else 0)
    out = np.zeros((b, len(elements)), dtype=np.int64)
    np.add.at(out, (batch, cols), 1)
    return out


def fit_normalizer(frames: Iterable[Frame], mode: str = "per_atom", scale: str | float = "energy_std",
                   elements: Sequence[int] | None = None, units: dict | None = None,
                   max_frames: int | None = None, seed: int = 0) -> Normalizer:
    """Fit shift and scale on training frames (a :class:`FrameDataset` or list of frames).

    Args:
        mode: ``per_atom``, ``linear_reference`` or ``none`` (see module docstring).
        scale: ``energy_std``, ``force_rms``, ``per_atom_std``, ``none`` or a positive number.
        elements: atomic numbers to include (default: those present); extra elements get the
            per-atom mean (``per_atom``) or 0 (``linear_reference``) as reference.
        units: recorded units (default: ``frames.units`` when available).
        max_frames: fit on a seeded random subset of at most this many frames (large sets).
    """
    if mode not in MODES:
        raise ValueError(f"normalization mode {mode!r} is not one of {MODES}")
    if isinstance(scale, str) and scale not in SCALES:
        raise ValueError(f"normalization scale {scale!r} is not one of {SCALES} or a number")
    if units is None:
        units = dict(getattr(frames, "units", {"energy": "eV", "length": "Angstrom"}))
    seq = frames if hasattr(frames, "__len__") and hasattr(frames, "__getitem__") else list(frames)
    order = range(len(seq))
    if max_frames is not None and len(seq) > max_frames:
        order = np.sort(np.random.default_rng(seed).permutation(len(seq))[:max_frames])
    energies, numbers, force_sq, force_n = [], [], 0.0, 0
    for i in order:
        frame = seq[int(i)]
        if frame.energy is None:
            raise ValueError(f"{getattr(frames, 'source', 'frames')}: frame {i} has no energy; cannot fit normalizer")
        energies.append(float(frame.energy))
        numbers.append(np.asarray(frame.numbers, dtype=np.int64))
        if frame.forces is not None:
            f = np.asarray(frame.forces, dtype=np.float64)
            force_sq += float(np.sum(f * f))
            force_n += f.size
    if not energies:
        raise ValueError("cannot fit a normalizer on an empty set of frames")
    present = sorted({int(z) for n in numbers for z in n})
    elems = sorted(set(present) | {int(z) for z in (elements or [])})
    counts = species_counts(numbers, elems).astype(np.float64)
    E = np.asarray(energies)
    natoms = counts.sum(1)
    per_atom_mean = float(np.mean(E / natoms))
    if mode == "per_atom":
        refs = np.full(len(elems), per_atom_mean)
    elif mode == "linear_reference":
        used = np.isin(elems, present)
        refs = np.zeros(len(elems))
        refs[used] = np.linalg.lstsq(counts[:, used], E, rcond=None)[0]
    else:
        refs = np.zeros(len(elems))
    resid = E - counts @ refs
    energy_std = float(np.std(resid))
    per_atom_std = float(np.std(resid / natoms))
    force_rms = float(np.sqrt(force_sq / force_n)) if force_n else 0.0
    stats = {"energy_std": energy_std, "force_rms": force_rms, "per_atom_std": per_atom_std, "none": 1.0}
    if isinstance(scale, str):
        value, source = stats[scale], scale
    else:
        value, source = float(scale), "fixed"
        if not value > 0:
            raise ValueError(f"normalization scale must be positive, got {scale}")
    # an energy statistic at rounding level of |E| means an exact fit or identical frames
    tiny = 1e-10 * max(1.0, float(np.max(np.abs(E)))) if source in ("energy_std", "per_atom_std") else 1e-12
    if not np.isfinite(value) or value <= tiny:
        warnings.warn(f"normalization scale {source}={value} is degenerate (too few or identical frames); "
                      f"using 1.0", stacklevel=2)
        value, source = 1.0, f"{source}(degenerate->1.0)"
    return Normalizer(mode=mode, elements=elems, references=[float(r) for r in refs], scale=float(value),
                      scale_source=source, per_atom_mean=per_atom_mean, energy_std=energy_std,
                      per_atom_std=per_atom_std, force_rms=force_rms, units=dict(units), n_frames=len(energies))


def _as_normalizer(stats: Normalizer | dict) -> Normalizer:
    return stats if isinstance(stats, Normalizer) else Normalizer.from_dict(stats)


def normalize_energy(energy: Any, counts: Any, stats: Normalizer | dict) -> Any:
    """(E - shift) / scale for per-structure energies [B] and species counts [B, n_el]."""
    return _as_normalizer(stats).normalize_energy(energy, counts)


def denormalize_energy(energy: Any, counts: Any, stats: Normalizer | dict) -> Any:
    """e_hat * scale + shift for normalised energies [B] and species counts [B, n_el]."""
    return _as_normalizer(stats).denormalize_energy(energy, counts)
