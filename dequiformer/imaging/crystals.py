"""Offline crystal pool and xTB Gamma-point gaps for the metal / semiconductor / insulator images.

Used by ``datasets/generate_crystal_gaps.py``. Structures are ASE ``bulk`` prototypes
(fcc / bcc / hcp metals, diamond, zincblende, rocksalt, fluorite, wurtzite, CsCl) of
known compounds at approximate experimental lattice constants, varied by isotropic
scaling, small random strains and small rattles of the primitive cell.

The label comes from a tblite GFN-xTB single point (GFN2-xTB by default, GFN1-xTB on
request). tblite has no k-points: it gives orbital energies at the Gamma point of the
cell it is handed. Gamma of an ``n1 x n2 x n3`` supercell of the primitive cell samples
the ``n1 x n2 x n3`` Monkhorst-Pack grid (Gamma-centred) of the primitive Brillouin zone,
so the supercell HOMO-LUMO gap is the gap of those k-points only: an upper bound of the
band gap of the same Hamiltonian, and for metals a coarse grid can leave a spurious gap
(a "shell closure" of the discrete levels, e.g. Al in a 2x2x2 supercell). Two supercells
with different grids are computed and the smaller gap is kept (still an upper bound).
Pooling their levels (min LUMO - max HOMO) would be tighter, but the absolute level
positions of two separate SCF runs differ by up to ~0.5 eV (GFN1-xTB LiF), so it is not
done. The result is an approximation of a band gap, not a band gap.

Everything here is importable by spawned worker processes (no torch import).
"""
from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from ase import Atoms

log = logging.getLogger(__name__)

BOHR_PER_ANGSTROM = 1.0 / 0.52917721067
EV_PER_HARTREE = 27.211386245988
METHODS = ("GFN2-xTB", "GFN1-xTB")

# Approximate experimental lattice constants (Angstrom); for hcp / wurtzite (a, c/a).
PROTOTYPE_COMPOUNDS: dict[str, dict[str, Any]] = {
    "fcc": {"Cu": 3.61, "Al": 4.05, "Ag": 4.09, "Au": 4.08, "Ni": 3.52, "Pd": 3.89, "Pt": 3.92,
            "Pb": 4.95, "Ca": 5.58, "Sr": 6.08, "Rh": 3.80, "Ir": 3.84},
    "bcc": {"Na": 4.23, "K": 5.23, "Li": 3.51, "Fe": 2.87, "Cr": 2.91, "Mo": 3.15, "W": 3.16,
            "V": 3.03, "Nb": 3.30, "Ta": 3.30, "Ba": 5.02, "Rb": 5.59},
    "hcp": {"Mg": (3.21, 1.624), "Ti": (2.95, 1.588), "Zn": (2.66, 1.856), "Zr": (3.23, 1.593),
            "Co": (2.51, 1.623), "Be": (2.29, 1.568), "Cd": (2.98, 1.886), "Sc": (3.31, 1.594)},
    "diamond": {"C": 3.567, "Si": 5.431, "Ge": 5.658, "Sn": 6.489},
    "zincblende": {"GaAs": 5.653, "GaP": 5.451, "InP": 5.869, "InAs": 6.058, "AlP": 5.463,
                   "AlAs": 5.661, "ZnS": 5.409, "ZnSe": 5.668, "CdTe": 6.482, "SiC": 4.360,
                   "BN": 3.615, "GaSb": 6.096, "CuCl": 5.410, "BP": 4.538},
    "rocksalt": {"NaCl": 5.64, "MgO": 4.21, "LiF": 4.03, "KCl": 6.29, "NaF": 4.63, "LiCl": 5.13,
                 "CaO": 4.81, "KBr": 6.60, "NaBr": 5.97, "SrO": 5.16, "BaO": 5.52, "PbS": 5.94,
                 "PbTe": 6.46, "TiN": 4.24, "ZrN": 4.58, "ScN": 4.50, "AgCl": 5.55, "KF": 5.35},
    "fluorite": {"CaF2": 5.463, "SrF2": 5.80, "BaF2": 6.20, "CeO2": 5.41, "ZrO2": 5.07,
                 "OLi2": 4.61, "SiMg2": 6.35},  # the last two anti-fluorite: anion on the 4a site
    "wurtzite": {"ZnO": (3.25, 1.602), "GaN": (3.19, 1.626), "AlN": (3.11, 1.601),
                 "CdS": (4.14, 1.623), "InN": (3.54, 1.611), "ZnS": (3.82, 1.638)},
    "cesiumchloride": {"CsCl": 4.12, "CsBr": 4.29, "CsI": 4.57, "NiAl": 2.88, "CuZn": 2.95,
                       "TlBr": 3.97},
}
"""Prototype -> {formula as ``ase.build.bulk`` wants it: lattice constant(s)}."""


@dataclass(frozen=True)
class CrystalSpec:
    """One structure of the pool: prototype, formula, isotropic scale of the lattice constant,
    a symmetric strain (components xx, yy, zz, yz, xz, xy; dimensionless), a rattle amplitude
    (Angstrom, normal std) and the seed of the rattle (the strain is drawn by :func:`crystal_pool`)."""

    prototype: str
    formula: str
    scale: float = 1.0
    strain: tuple[float, ...] = (0.0,) * 6
    rattle: float = 0.0
    seed: int = 0

    @property
    def id(self) -> str:
        tag = f"{self.prototype}:{self.formula}:s{self.scale:.3f}"
        if any(self.strain):
            tag += f":e{self.seed}"
        if self.rattle:
            tag += f":r{self.rattle:.2f}-{self.seed}"
        return tag


def check_prototype(prototype: str) -> None:
    """Raise ValueError naming ``prototype`` and the known ones when it is not in the table."""
    if prototype not in PROTOTYPE_COMPOUNDS:
        raise ValueError(f"unknown crystal prototype {prototype!r}; known: {sorted(PROTOTYPE_COMPOUNDS)}")


def build_primitive(spec: CrystalSpec) -> Atoms:
    """Primitive cell of ``spec`` (positions, cell in Angstrom; pbc on), scaled, strained, rattled."""
    check_prototype(spec.prototype)
    table = PROTOTYPE_COMPOUNDS[spec.prototype]
    if spec.formula not in table:
        raise ValueError(f"formula {spec.formula!r} is not in the {spec.prototype!r} table; "
                         f"known: {sorted(table)}")
    from ase.build import bulk

    value = table[spec.formula]
    if spec.prototype in ("hcp", "wurtzite"):
        a, covera = value
        atoms = bulk(spec.formula, spec.prototype, a=a * spec.scale, c=a * covera * spec.scale)
    else:
        atoms = bulk(spec.formula, spec.prototype, a=float(value) * spec.scale)
    if any(spec.strain):
        e = np.array(spec.strain, dtype=np.float64)
        # Symmetric strain from its six independent components (xx, yy, zz, yz, xz, xy).
        eps = np.array([[e[0], e[5], e[4]], [e[5], e[1], e[3]], [e[4], e[3], e[2]]])
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    if spec.rattle:
        atoms.rattle(stdev=spec.rattle, seed=spec.seed)
    atoms.pbc = True
    atoms.info["id"] = spec.id
    return atoms


def crystal_pool(scales: Sequence[float] = (0.96, 1.0, 1.04), n_strained: int = 1, n_rattled: int = 1,
                 strain_max: float = 0.02, rattle: float = 0.05, seed: int = 0,
                 prototypes: Sequence[str] | None = None) -> list[CrystalSpec]:
    """Every prototype x compound x {each scale, ``n_strained`` random strains (|e_ij| <= ``strain_max``),
    ``n_rattled`` rattles (``rattle`` A std, only for cells of >= 2 atoms, where a rattle is
    not a mere translation)}. Deterministic in ``seed``; ids are unique."""
    names = list(PROTOTYPE_COMPOUNDS) if prototypes is None else list(prototypes)
    for p in names:
        check_prototype(p)
    out: list[CrystalSpec] = []
    for prototype in names:
        for formula in PROTOTYPE_COMPOUNDS[prototype]:
            base = zlib.crc32(f"{prototype}:{formula}".encode()) ^ seed
            rng = np.random.default_rng(base)
            out += [CrystalSpec(prototype, formula, float(s)) for s in scales]
            for k in range(n_strained):
                strain = tuple(float(x) for x in rng.uniform(-strain_max, strain_max, 6))
                out.append(CrystalSpec(prototype, formula, 1.0, strain, 0.0, k + 1))
            n_prim = len(build_primitive(CrystalSpec(prototype, formula)))
            if n_prim >= 2:
                out += [CrystalSpec(prototype, formula, 1.0, (0.0,) * 6, float(rattle), 100 + k)
                        for k in range(n_rattled)]
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):  # pragma: no cover - guards the id scheme
        raise RuntimeError("crystal pool ids are not unique")
    return out


def supercell_repeats(atoms: Atoms, min_length: float = 5.0, max_atoms: int = 48) -> list[tuple[int, int, int]]:
    """Two repeat triples (A, B) of the primitive ``atoms`` with different k-grids.

    A: each cell vector repeated until it is >= ``min_length`` A long (at least 2x).
    B: A plus one more repeat along as many axes as fit in ``max_atoms`` (shortest first),
    so its Gamma point samples k-points that A's does not.
    """
    lengths = atoms.cell.lengths()
    a = [max(2, math.ceil(min_length / max(l, 1e-6))) for l in lengths]
    b = list(a)
    for axis in np.argsort(lengths):
        trial = list(b)
        trial[axis] += 1
        if len(atoms) * int(np.prod(trial)) <= max_atoms:
            b = trial
    if b == a:  # nothing fits: still give B a different grid along the shortest axis
        b[int(np.argmin(lengths))] += 1
    return [tuple(a), tuple(b)]


@dataclass
class GammaLevels:
    """Frontier levels at Gamma of one supercell (eV): HOMO, LUMO, electron count, atoms, SCF seconds."""

    homo: float
    lumo: float
    n_electrons: int
    n_atoms: int
    seconds: float = 0.0
    repeats: tuple[int, int, int] = (1, 1, 1)
    extra: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return max(0.0, self.lumo - self.homo)


def frontier_levels(energies_ev: np.ndarray, occupations: np.ndarray) -> tuple[float, float, int]:
    """(HOMO, LUMO, electrons) of a spin-restricted calculation by aufbau filling.

    energies_ev [norb] (eV), occupations [norb] (0..2 e). With an odd electron count the
    highest level is half filled: HOMO = LUMO = that level (gap 0, metallic). A degenerate
    level that is partly filled also gives HOMO = LUMO.
    """
    e = np.sort(np.asarray(energies_ev, dtype=np.float64).ravel())
    n_el = int(round(float(np.sum(occupations))))
    if n_el <= 0 or n_el >= 2 * len(e):
        raise RuntimeError(f"cannot place a HOMO/LUMO: {n_el} electrons in {len(e)} orbitals")
    if n_el % 2:
        level = float(e[n_el // 2])
        return level, level, n_el
    return float(e[n_el // 2 - 1]), float(e[n_el // 2]), n_el


ELECTRONIC_TEMPERATURES_K = (300.0, 1000.0, 3000.0)
"""Fermi-smearing temperatures tried in turn when an SCF fails: 300 K is tblite's default;
the hotter ones only help the SCF of metals converge (W, K, Sc, Mg2Si in GFN2-xTB)."""
HARTREE_PER_KELVIN = 3.166811563e-6


def gamma_levels(atoms: Atoms, method: str = "GFN2-xTB", max_iter: int = 250, accuracy: float = 1.0,
                 temperatures: Sequence[float] = ELECTRONIC_TEMPERATURES_K) -> GammaLevels:
    """tblite single point of periodic ``atoms`` (Angstrom): frontier levels at Gamma (eV).

    The electronic temperatures (K) are tried in order until one SCF converges; the one used
    is ``extra["electronic_temperature_k"]``. The gap itself is read from the orbital
    energies by aufbau filling, so the smearing enters only through the SCF density.
    Raises RuntimeError (with tblite's message for each temperature) when all fail.
    """
    import time

    from tblite.interface import Calculator

    if method not in METHODS:
        raise ValueError(f"unknown xTB method {method!r}; use one of {METHODS}")
    errors = []
    for temperature in temperatures:
        t0 = time.perf_counter()
        try:
            calc = Calculator(method, np.asarray(atoms.numbers, dtype=np.int64),
                              np.asarray(atoms.positions, dtype=np.float64) * BOHR_PER_ANGSTROM,
                              lattice=np.asarray(atoms.cell.array, dtype=np.float64) * BOHR_PER_ANGSTROM,
                              periodic=np.array([True, True, True]))
            calc.set("verbosity", 0)
            calc.set("max-iter", int(max_iter))
            calc.set("accuracy", float(accuracy))
            calc.set("temperature", float(temperature) * HARTREE_PER_KELVIN)
            res = calc.singlepoint()
            energies = np.asarray(res.get("orbital-energies"), dtype=np.float64) * EV_PER_HARTREE
            occupations = np.asarray(res.get("orbital-occupations"), dtype=np.float64)
        except Exception as exc:  # tblite raises its own error types; keep the message
            errors.append(f"{temperature:g} K: {type(exc).__name__}: {exc}")
            log.debug("%s SCF of %s failed at %g K: %s", method, atoms.get_chemical_formula(), temperature, exc)
            continue
        if energies.ndim != 1:
            raise RuntimeError(f"expected spin-restricted orbital energies [norb], got shape {energies.shape}")
        if not np.all(np.isfinite(energies)):
            raise RuntimeError(f"non-finite orbital energies for {atoms.get_chemical_formula()}")
        homo, lumo, n_el = frontier_levels(energies, occupations)
        return GammaLevels(homo, lumo, n_el, len(atoms), time.perf_counter() - t0,
                           extra={"electronic_temperature_k": float(temperature)})
    raise RuntimeError(f"{method} failed for {atoms.get_chemical_formula()} ({len(atoms)} atoms): "
                       + "; ".join(errors))


def supercell_gap(primitive: Atoms, method: str = "GFN2-xTB", min_length: float = 5.0,
                  max_atoms: int = 48) -> dict[str, Any]:
    """Gamma-point HOMO-LUMO gap (eV) of ``primitive``: the smaller of two supercells' (module notes).

    Returns ``{"gap_ev", "homo_ev", "lumo_ev", "supercells": [{"repeats", "n_atoms", "gap_ev",
    "homo_ev", "lumo_ev", "seconds", "electronic_temperature_k"}, ...]}`` (HOMO/LUMO of the
    supercell with the smaller gap).
    A first supercell that is already gapless (< 1e-3 eV) settles it: the second could only
    give the same 0.
    """
    runs = []
    for reps in supercell_repeats(primitive, min_length, max_atoms):
        levels = gamma_levels(primitive.repeat(reps), method)
        levels.repeats = reps
        runs.append(levels)
        if levels.gap < 1e-3:
            break
    best = min(runs, key=lambda r: r.gap)
    return {"gap_ev": best.gap, "homo_ev": best.homo, "lumo_ev": best.lumo,
            "supercells": [{"repeats": list(r.repeats), "n_atoms": r.n_atoms, "gap_ev": r.gap,
                            "homo_ev": r.homo, "lumo_ev": r.lumo, "seconds": round(r.seconds, 3), **r.extra}
                           for r in runs]}


def compute_crystal(task: tuple[CrystalSpec, str, float, dict, float, int]) -> dict[str, Any]:
    """Worker: ``(spec, method, cutoff, render_config, min_length, max_atoms)`` -> record.

    ``status`` is "ok", "build_failed" or "xtb_failed" (then ``error`` says why); an ok
    record has ``atoms`` (the primitive cell that was repeated), ``gap`` (dict of
    :func:`supercell_gap`) and ``image`` (uint8 [H, W, 3]).
    """
    from .render import render_structure

    spec, method, cutoff, render_config, min_length, max_atoms = task
    record: dict[str, Any] = {"id": spec.id, "spec": spec, "status": "ok"}
    try:
        atoms = build_primitive(spec)
    except Exception as exc:
        record.update(status="build_failed", error=f"{type(exc).__name__}: {exc}")
        return record
    try:
        gap = supercell_gap(atoms, method, min_length, max_atoms)
    except Exception as exc:
        record.update(status="xtb_failed", error=str(exc))
        return record
    record.update(atoms=atoms, gap=gap, image=render_structure(atoms, cutoff, render_config))
    return record


__all__ = ["PROTOTYPE_COMPOUNDS", "METHODS", "ELECTRONIC_TEMPERATURES_K", "CrystalSpec", "GammaLevels",
           "check_prototype", "build_primitive", "crystal_pool", "supercell_repeats", "frontier_levels",
           "gamma_levels", "supercell_gap", "compute_crystal"]
