"""Energy and length units of the supported data sets, and conversion to eV and eV/A.

Data sets keep the units their files were written in: sGDML/MD17, rMD17 and MD22
store kcal/mol (energies) and kcal/mol/A (forces); OC20, ASE databases and extxyz
files store eV and eV/A. Lengths are always Angstrom. A model trains in its data's
units and records them; conversion to eV happens only at the ASE-calculator boundary.
"""
from __future__ import annotations

from typing import Any

from ase import units as _ase_units

#: One kcal/mol expressed in eV (about 0.0433641), from ase.units.
KCAL_PER_MOL: float = float(_ase_units.kcal / _ase_units.mol)
#: One kJ/mol expressed in eV.
KJ_PER_MOL: float = float(_ase_units.kJ / _ase_units.mol)
#: One Hartree expressed in eV.
HARTREE: float = float(_ase_units.Hartree)
#: One Bohr expressed in Angstrom.
BOHR: float = float(_ase_units.Bohr)

#: Size of each known energy unit in eV.
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": KCAL_PER_MOL,
    "kJ/mol": KJ_PER_MOL,
    "Hartree": HARTREE,
}
#: Size of each known length unit in Angstrom.
LENGTH_UNITS: dict[str, float] = {"Angstrom": 1.0, "Bohr": BOHR, "nm": 10.0}

_ALIASES = {
    "ev": "eV", "mev": "meV", "kcal/mol": "kcal/mol", "kcal mol-1": "kcal/mol",
    "kcal/mole": "kcal/mol", "kj/mol": "kJ/mol", "hartree": "Hartree", "ha": "Hartree",
    "angstrom": "Angstrom", "ang": "Angstrom", "a": "Angstrom", "å": "Angstrom",
    "bohr": "Bohr", "nm": "nm",
}

#: Units of each reader format: energies in ``energy`` units, forces in energy/length.
FORMAT_UNITS: dict[str, dict[str, str]] = {
    "md17": {"energy": "kcal/mol", "length": "Angstrom"},
    "rmd17": {"energy": "kcal/mol", "length": "Angstrom"},
    "oc20_lmdb": {"energy": "eV", "length": "Angstrom"},
    "ase_db": {"energy": "eV", "length": "Angstrom"},
    "extxyz": {"energy": "eV", "length": "Angstrom"},
}


def canonical_unit(name: str) -> str:
    """Return the canonical spelling of an energy or length unit (``"ev"`` -> ``"eV"``)."""
    key = str(name).strip()
    canon = _ALIASES.get(key.lower())
    if canon is None and (key in ENERGY_UNITS or key in LENGTH_UNITS):
        canon = key
    if canon is None:
        known = sorted(set(ENERGY_UNITS) | set(LENGTH_UNITS))
        raise ValueError(f"unknown unit {name!r}; known units: {known}")
    return canon


def energy_factor(from_unit: str, to_unit: str = "eV") -> float:
    """Multiplicative factor converting energies from ``from_unit`` to ``to_unit``."""
    a, b = canonical_unit(from_unit), canonical_unit(to_unit)
    for u in (a, b):
        if u not in ENERGY_UNITS:
            raise ValueError(f"{u!r} is not an energy unit; known: {sorted(ENERGY_UNITS)}")
    return ENERGY_UNITS[a] / ENERGY_UNITS[b]


def length_factor(from_unit: str, to_unit: str = "Angstrom") -> float:
    """Multiplicative factor converting lengths from ``from_unit`` to ``to_unit``."""
    a, b = canonical_unit(from_unit), canonical_unit(to_unit)
    for u in (a, b):
        if u not in LENGTH_UNITS:
            raise ValueError(f"{u!r} is not a length unit; known: {sorted(LENGTH_UNITS)}")
    return LENGTH_UNITS[a] / LENGTH_UNITS[b]


def force_factor(units: dict[str, str], to_energy: str = "eV", to_length: str = "Angstrom") -> float:
    """Factor converting forces in ``units["energy"]/units["length"]`` to ``to_energy/to_length``."""
    return energy_factor(units["energy"], to_energy) / length_factor(units.get("length", "Angstrom"), to_length)


def energy_to_ev(values: Any, unit: str) -> Any:
    """Convert energies (float, numpy array or torch tensor, any shape) from ``unit`` to eV."""
    return values * energy_factor(unit, "eV")


def forces_to_ev_per_angstrom(values: Any, units: dict[str, str] | str) -> Any:
    """Convert forces [..., 3] from ``units`` (a units dict or an energy unit, per Angstrom) to eV/A."""
    if isinstance(units, str):
        units = {"energy": units, "length": "Angstrom"}
    return values * force_factor(units)


def units_for_format(fmt: str) -> dict[str, str]:
    """Units dict ``{"energy": ..., "length": "Angstrom"}`` of a reader format name."""
    if fmt not in FORMAT_UNITS:
        raise ValueError(f"unknown data format {fmt!r}; known formats: {sorted(FORMAT_UNITS)}")
    return dict(FORMAT_UNITS[fmt])
