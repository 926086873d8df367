#!/usr/bin/env python
"""ASE-EMT relaxations of adsorbates on fcc(111) slabs, written as an OC20 S2EF-layout LMDB.

Each system is an fcc(111) slab of one metal (EMT covers Al, Cu, Ag, Au, Ni, Pd, Pt) with
one adsorbate atom (H, C, N or O) on an ontop, bridge, fcc or hcp site, rattled and then
relaxed with BFGS under the EMT potential, the subsurface layers held fixed as in OC20 (only the
top layer and the adsorbate move). ``--exclude-pairs`` / ``--pairs`` keep adsorbate/metal pairs
out of (or restrict to) a set, so a test set can hold combinations never seen in training. Every frame of
every relaxation (the initial structure included) becomes one entry, as in OC20 S2EF:

    pos [N, 3] float32 (A), atomic_numbers [N] float32, cell [1, 3, 3] float32, natoms,
    tags [N] int64 (0 subsurface, 1 surface, 2 adsorbate), fixed [N] float32 (1 = subsurface,
    i.e. tag 0), y (energy, eV), force [N, 3] float32 (eV/A, raw forces incl. fixed atoms),
    sid (system index), fid (frame index within the relaxation).

Entries are pickled ``torch_geometric.data.Data`` under keys "0", "1", ... plus "length".
The LMDB is written to ``<out>.tmp`` and renamed when complete. Read it back with
``dequiformer.data.readers.read_dataset(path)``.

Example:
    python datasets/generate_emt_relaxations.py --systems 200 --steps 50 --out data/emt_train.lmdb
    python datasets/generate_emt_relaxations.py --systems 20 --steps 50 --seed 1 --out data/emt_val.lmdb
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

try:
    from dequiformer.data.readers import Frame, frame_to_data_fields, write_oc20_lmdb
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dequiformer.data.readers import Frame, frame_to_data_fields, write_oc20_lmdb

EMT_METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
EMT_ADSORBATES = ("H", "C", "N", "O")
SITES = ("ontop", "bridge", "fcc", "hcp")
# starting adsorbate heights above the top layer (A); ontop sites sit higher
_HEIGHT = {"H": 1.0, "C": 1.3, "N": 1.3, "O": 1.3}
_ONTOP_EXTRA = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--systems", type=int, default=100, help="number of slab+adsorbate relaxations")
    p.add_argument("--steps", type=int, default=50, help="maximum BFGS steps per relaxation")
    p.add_argument("--fmax", type=float, default=0.05, help="force convergence threshold (eV/A)")
    p.add_argument("--metals", nargs="+", default=list(EMT_METALS), help="slab metals to draw from")
    p.add_argument("--adsorbates", nargs="+", default=list(EMT_ADSORBATES), help="adsorbate atoms to draw from")
    p.add_argument("--sites", nargs="+", default=list(SITES), help="adsorption sites to draw from")
    p.add_argument("--exclude-pairs", nargs="+", default=[], metavar="ADS/METAL",
                   help="adsorbate/metal pairs never drawn (e.g. O/Pt N/Cu)")
    p.add_argument("--pairs", nargs="+", default=[], metavar="ADS/METAL",
                   help="draw only these adsorbate/metal pairs (overrides --metals/--adsorbates)")
    p.add_argument("--size", type=int, nargs=2, default=(2, 2), help="surface supercell (a b)")
    p.add_argument("--layers", type=int, default=3, help="slab layers (all but the top one are fixed)")
    p.add_argument("--vacuum", type=float, default=7.0, help="vacuum on each side of the slab (A)")
    p.add_argument("--rattle", type=float, default=0.05, help="std of the initial random displacement (A)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--out", default="emt_relaxations.lmdb", help="output .lmdb file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def build_system(metal: str, adsorbate: str, site: str, size: tuple[int, int], layers: int,
                 vacuum: float, rattle: float, rng: np.random.Generator):
    """Slab + adsorbate as ``ase.Atoms`` with OC20 tags and the subsurface layers (tag 0) fixed by FixAtoms."""
    from ase.build import add_adsorbate, fcc111
    from ase.constraints import FixAtoms

    slab = fcc111(metal, size=(size[0], size[1], layers), vacuum=vacuum, periodic=True)
    layer = slab.get_tags().copy()  # ase: 1 = top layer ... layers = bottom layer
    height = _HEIGHT.get(adsorbate, 1.5) + (_ONTOP_EXTRA if site == "ontop" else 0.0)
    add_adsorbate(slab, adsorbate, height, position=site)
    tags = np.zeros(len(slab), dtype=int)
    tags[np.flatnonzero(layer == 1)] = 1
    tags[len(layer):] = 2
    slab.set_tags(tags)
    subsurface = np.flatnonzero(tags == 0)
    slab.set_constraint(FixAtoms(indices=subsurface))
    if rattle > 0:
        free = np.ones(len(slab), dtype=bool)
        free[subsurface] = False
        slab.positions[free] += rng.normal(scale=rattle, size=(int(free.sum()), 3))
    return slab


def relax(atoms, steps: int, fmax: float) -> list[Frame]:
    """BFGS relaxation with EMT; every visited structure (initial included) as a Frame (eV, eV/A)."""
    from ase.calculators.emt import EMT
    from ase.optimize import BFGS

    atoms.calc = EMT()
    frames: list[Frame] = []

    def record() -> None:
        frames.append(Frame.from_atoms(atoms, energy=atoms.get_potential_energy(),
                                       forces=atoms.get_forces(apply_constraint=False)))

    opt = BFGS(atoms, logfile=None, maxstep=0.2)
    opt.attach(record, interval=1)
    opt.run(fmax=fmax, steps=steps)
    if not frames:
        record()
    return frames


def _parse_pairs(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for value in values:
        ads, _, metal = value.partition("/")
        if ads not in EMT_ADSORBATES or metal not in EMT_METALS:
            raise SystemExit(f"error: pair {value!r} must be ADSORBATE/METAL with an adsorbate in "
                             f"{list(EMT_ADSORBATES)} and a metal in {list(EMT_METALS)}")
        out.append((ads, metal))
    return out


def allowed_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (adsorbate, metal) pairs to draw from, in a fixed order."""
    pairs = _parse_pairs(args.pairs) or [(a, m) for m in args.metals for a in args.adsorbates]
    excluded = set(_parse_pairs(args.exclude_pairs))
    pairs = [p for p in pairs if p not in excluded]
    if not pairs:
        raise SystemExit("error: --pairs / --exclude-pairs leave no adsorbate/metal pair to draw")
    return pairs


def iter_entries(args: argparse.Namespace) -> Iterator[dict]:
    """OC20 field dicts for all frames of all relaxations, system by system."""
    from tqdm import tqdm

    for name, allowed in (("metal", EMT_METALS), ("adsorbate", EMT_ADSORBATES), ("site", SITES)):
        values = getattr(args, name + "s")
        bad = sorted(set(values) - set(allowed))
        if bad:
            raise SystemExit(f"error: {name}(s) {bad} not supported; choose from {list(allowed)}")
    pairs = allowed_pairs(args)
    rng = np.random.default_rng(args.seed)
    for sid in tqdm(range(args.systems), desc="EMT relaxations", unit="system", disable=args.quiet,
                    file=sys.stderr):
        adsorbate, metal = pairs[int(rng.integers(len(pairs)))]
        site = str(rng.choice(args.sites))
        atoms = build_system(metal, adsorbate, site, tuple(args.size), args.layers, args.vacuum, args.rattle, rng)
        for fid, frame in enumerate(relax(atoms, args.steps, args.fmax)):
            fields = frame_to_data_fields(frame, sid=sid, fid=fid)
            fields["system"] = f"{adsorbate}/{metal}(111)-{site}"
            yield fields


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point; returns the path written."""
    args = build_parser().parse_args(argv)
    if args.systems < 1 or args.steps < 0 or args.layers < 2:
        raise SystemExit("error: need --systems >= 1, --steps >= 0 and --layers >= 2")
    out = Path(args.out)
    count = write_oc20_lmdb(out, iter_entries(args))
    if not args.quiet:
        print(f"wrote {out}: {count} frames from {args.systems} relaxations (eV, eV/A)", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
