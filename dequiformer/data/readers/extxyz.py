"""Reader for extended XYZ files with MACE-style label keys (eV, eV/A).

By default the energy is ``atoms.info["REF_energy"]`` and the forces
``atoms.arrays["REF_forces"]`` (the MACE convention, which keeps reference labels apart
from whatever calculator results a file also carries). Key names are configurable. When
a key is ``"energy"`` / ``"forces"``, ASE's reader has already moved those columns into a
``SinglePointCalculator``, and they are taken from there. Calculator results are used in
place of other missing keys only when ``calc_fallback=True``.

The stress, where a frame has one, is ``atoms.info["REF_stress"]`` (eV/A^3, ASE's sign, 9 values
or 6 in Voigt order) or else ``REF_virial`` (eV, ``stress = -virial / volume``), or a
calculator's ``stress``; frames without one have ``stress=None`` (stress is optional).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..units import units_for_format
from .frames import DataError, Frame, FrameDataset, require_nonempty, stress_matrix, validate_frame

_CALC_ENERGY = ("energy", "free_energy")
_CALC_FORCES = ("forces",)


def _calc_result(atoms: Any, prop: str) -> Any:
    calc = atoms.calc
    if calc is None:
        return None
    return getattr(calc, "results", {}).get(prop)


def _energy(atoms: Any, key: str, calc_fallback: bool) -> Any:
    if key in atoms.info:
        return atoms.info[key]
    if key in _CALC_ENERGY and _calc_result(atoms, key) is not None:
        return _calc_result(atoms, key)
    if calc_fallback:
        return _calc_result(atoms, "energy")
    return None


def _forces(atoms: Any, key: str, calc_fallback: bool) -> Any:
    if key in atoms.arrays:
        return atoms.arrays[key]
    if key in _CALC_FORCES and _calc_result(atoms, key) is not None:
        return _calc_result(atoms, key)
    if calc_fallback:
        return _calc_result(atoms, "forces")
    return None


def _stress(atoms: Any, key: str, virial_key: str, where: str) -> np.ndarray | None:
    """The frame's stress [3, 3] from ``key``, else ``-virial_key / V``, else the calculator's."""
    try:
        if key in atoms.info:
            return stress_matrix(atoms.info[key])
        if virial_key in atoms.info:
            volume = abs(float(np.linalg.det(atoms.cell.array)))
            if volume <= 0:
                raise ValueError("the frame has no cell volume to divide the virial by")
            return -stress_matrix(atoms.info[virial_key]) / volume
    except ValueError as exc:
        raise DataError(f"{where}: key {key if key in atoms.info else virial_key!r}: {exc}") from None
    value = _calc_result(atoms, "stress")
    return None if value is None else stress_matrix(value)


def read_extxyz(path: str | Path, energy_key: str = "REF_energy", forces_key: str = "REF_forces",
                calc_fallback: bool = False, require_labels: bool = True, index: str | int = ":") -> FrameDataset:
    """Read an extended XYZ file into a list-backed :class:`FrameDataset` (eV, eV/A).

    Args:
        energy_key: ``atoms.info`` key of the total energy (eV).
        forces_key: ``atoms.arrays`` key of the forces [N, 3] (eV/A).
        calc_fallback: use calculator results (``energy=``/``forces`` columns) when the
            configured keys are missing.
        require_labels: raise :class:`DataError` (naming the frame) when a label is missing;
            otherwise it is left None.
        index: ASE index string or int selecting frames (default all).
    """
    import ase.io

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        images = ase.io.read(str(path), index=index, format="extxyz")
    except Exception as exc:
        raise DataError(f"{path}: cannot parse as extended XYZ ({type(exc).__name__}: {exc})") from exc
    if not isinstance(images, list):
        images = [images]
    require_nonempty(len(images), str(path))
    frames: list[Frame] = []
    for i, atoms in enumerate(images):
        energy = _energy(atoms, energy_key, calc_fallback)
        forces = _forces(atoms, forces_key, calc_fallback)
        if require_labels and energy is None:
            raise DataError(f"{path}: frame {i}: missing energy key {energy_key!r} in the comment line "
                            f"(info keys: {sorted(atoms.info)})"
                            + ("" if calc_fallback else "; pass calc_fallback=True to use calculator results"))
        if require_labels and forces is None:
            raise DataError(f"{path}: frame {i}: missing forces key {forces_key!r} in the Properties columns "
                            f"(columns: {sorted(atoms.arrays)})"
                            + ("" if calc_fallback else "; pass calc_fallback=True to use calculator results"))
        if energy is not None:
            e = np.asarray(energy, dtype=float).reshape(-1)
            if e.size != 1:
                raise DataError(f"{path}: frame {i}: key {energy_key!r} has shape {np.shape(energy)}, "
                                f"expected a scalar")
            energy = float(e[0])
        stress = _stress(atoms, "REF_stress", "REF_virial", f"{path}: frame {i}")
        info = {k: v for k, v in atoms.info.items() if k not in (energy_key, "REF_stress", "REF_virial")}
        info["index"] = i
        frame = Frame.from_atoms(atoms, energy=energy,
                                 forces=None if forces is None else np.asarray(forces, dtype=float), info=info,
                                 stress=stress)
        frames.append(validate_frame(frame, i, str(path), {"energy": energy_key, "forces": forces_key,
                                                           "stress": "REF_stress"}))
    return FrameDataset.from_frames(frames, units=units_for_format("extxyz"), source=str(path),
                                    format="extxyz", validate=False)
