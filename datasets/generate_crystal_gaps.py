#!/usr/bin/env python
"""Generate an offline metal / semiconductor / insulator graph-image data set from xTB gaps.

No downloads: crystals are ASE ``bulk`` prototypes of known compounds (fcc / bcc / hcp
metals, diamond and zincblende semiconductors, rocksalt / fluorite / wurtzite / CsCl
compounds) at approximate experimental lattice constants, each at several isotropic
scalings (``--scales``), with random strains (``--strained``) and rattles (``--rattled``),
see ``dequiformer.imaging.crystals``. Labels come from a tblite single point
(``--method``, GFN2-xTB by default): the HOMO-LUMO gap at the Gamma point of two
supercells of the primitive cell with different k-grids, the smaller of the two. That is
an approximation of the band gap of a tight-binding Hamiltonian fitted to molecules, not
a DFT band gap.
Classes: metal (gap < 0.1 eV), semiconductor (< 3 eV), insulator (the thresholds of
``dequiformer.imaging.datasets.bandgap_label``). Each primitive cell is rendered to a
node-neighbour image with the periodic cutoff (3.4 A, 16-pixel atom records).

An SCF that fails at 300 K is retried with a hotter Fermi smearing (1000 K, then 3000 K);
structures whose build or every SCF fails are skipped, logged with the reason and counted.

Outputs in ``--out`` (default ``data/crystal_gaps``):
    images.npz         ImageDataset (uint8 images [n, H, W, 3], labels, class names, metadata)
    structures.extxyz  primitive cells (Angstrom, pbc), one frame per image, same order; info:
                       id, label, label_name, gap_ev, prototype, formula, method
    crystals.csv       id, prototype, formula, scale, n_atoms, supercells, gap (eV), label,
                       electronic temperature (K) of the SCF (raised only where 300 K failed)
    legend.png/.json   element colours, image layout
    summary.json       counts per class, failures with reasons, timings

Usage (220 of the 411 pool structures take ~20 min on one core; no ``--n``: all)::

    OMP_NUM_THREADS=1 python datasets/generate_crystal_gaps.py --n 220 --out data/crystal_gaps
"""
from __future__ import annotations

import argparse
import csv
import logging
import random
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

try:  # run from a checkout without installing
    import dequiformer  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dequiformer.imaging.bond_graph import PERIODIC_CUTOFF
from dequiformer.imaging.crystals import METHODS, PROTOTYPE_COMPOUNDS, compute_crystal, crystal_pool
from dequiformer.imaging.parallel import map_in_workers
from dequiformer.rundir import atomic_output, write_extxyz, write_json

log = logging.getLogger("generate_crystal_gaps")
METAL_BELOW = 0.1
SEMICONDUCTOR_BELOW = 3.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--n", type=int, default=None, help="structures to compute, drawn from the shuffled pool "
                   "(default: the whole pool)")
    p.add_argument("--method", default="GFN2-xTB", choices=METHODS, help="tblite Hamiltonian (default GFN2-xTB)")
    p.add_argument("--prototypes", nargs="+", default=None,
                   help=f"prototypes to use (default all: {' '.join(PROTOTYPE_COMPOUNDS)})")
    p.add_argument("--scales", type=float, nargs="+", default=[0.96, 1.0, 1.04],
                   help="isotropic lattice-constant factors (default 0.96 1.0 1.04)")
    p.add_argument("--strained", type=int, default=1, help="random strains per compound (|e_ij| <= 0.02; default 1)")
    p.add_argument("--rattled", type=int, default=1, help="rattled cells per compound with >= 2 atoms "
                   "(0.05 A std; default 1)")
    p.add_argument("--min-length", type=float, default=5.0,
                   help="first supercell: every vector >= this many A, at least 2 repeats (default 5)")
    p.add_argument("--max-atoms", type=int, default=48, help="atoms in the second supercell at most (default 48)")
    p.add_argument("--size", type=int, default=32, help="image height = width in pixels (default 32)")
    p.add_argument("--slots", type=int, default=16, help="pixels per atom record (default 16)")
    p.add_argument("--seed", type=int, default=0, help="pool shuffle, strain and rattle seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("data/crystal_gaps"), help="output folder")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1 = in-process)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.n is not None and args.n < 1:
        p.error("--n must be positive")
    if args.workers < 1:
        p.error("--workers must be >= 1")
    if not args.scales or any(s <= 0 for s in args.scales):
        p.error(f"--scales must be positive factors, got {args.scales}")
    if args.prototypes:
        unknown = [x for x in args.prototypes if x not in PROTOTYPE_COMPOUNDS]
        if unknown:
            p.error(f"unknown prototype(s) {unknown}; known: {sorted(PROTOTYPE_COMPOUNDS)}")
    return args


def gap_label(gap_ev: float) -> int:
    """0 metal (< 0.1 eV), 1 semiconductor (< 3 eV), 2 insulator."""
    from dequiformer.imaging.datasets import bandgap_label

    return bandgap_label(gap_ev, METAL_BELOW, SEMICONDUCTOR_BELOW)


def write_structures(records: Sequence[dict], labels: np.ndarray, class_names: Sequence[str], method: str,
                     path: Path) -> Path:
    """Extended XYZ of the primitive cells (atomically); frame ``i`` is image ``i``."""
    frames = []
    for r, label in zip(records, labels):
        atoms = r["atoms"].copy()
        spec = r["spec"]
        atoms.info.clear()
        atoms.info.update(id=r["id"], label=int(label), label_name=str(class_names[int(label)]),
                          gap_ev=float(r["gap"]["gap_ev"]), prototype=spec.prototype, formula=spec.formula,
                          method=method)
        frames.append(atoms)
    return write_extxyz(path, frames)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from tqdm.auto import tqdm

    from dequiformer.imaging.datasets import BANDGAP_CLASSES
    from dequiformer.imaging.image_dataset import ImageDataset
    from dequiformer.imaging.render import RenderConfig, save_legend

    t0 = time.perf_counter()
    config = RenderConfig(size=(args.size, args.size), slots=args.slots)
    pool = crystal_pool(scales=args.scales, n_strained=args.strained, n_rattled=args.rattled, seed=args.seed,
                        prototypes=args.prototypes)
    random.Random(args.seed).shuffle(pool)
    if args.n is not None and args.n > len(pool):
        raise SystemExit(f"error: --n {args.n} is larger than the crystal pool ({len(pool)} structures from "
                         f"{len(args.scales)} scales, {args.strained} strained, {args.rattled} rattled per "
                         f"compound); ask for at most {len(pool)} or add --scales / --strained / --rattled")
    chosen = pool if args.n is None else pool[:args.n]
    tasks = [(spec, args.method, PERIODIC_CUTOFF, config.to_dict(), args.min_length, args.max_atoms)
             for spec in chosen]

    kept, failures = [], {"build_failed": [], "xtb_failed": []}
    bar = tqdm(total=len(tasks), desc=f"{args.method} gaps", unit="crystal", disable=args.quiet)
    for record in map_in_workers(compute_crystal, tasks, args.workers, chunksize=1):
        bar.update(1)
        if record["status"] == "ok":
            kept.append(record)
        else:
            log.warning("skipped %s (%s): %s", record["id"], record["status"], record["error"])
            failures[record["status"]].append({"id": record["id"], "error": record["error"]})
    bar.close()
    t_compute = time.perf_counter() - t0

    gaps = np.array([r["gap"]["gap_ev"] for r in kept], dtype=np.float64)
    labels = np.array([gap_label(g) for g in gaps], dtype=np.int64)
    images = (np.stack([r["image"] for r in kept]) if kept
              else np.zeros((0, args.size, args.size, 3), np.uint8))
    n_failed = sum(len(v) for v in failures.values())
    metadata = {
        "source": "generate_crystal_gaps", "method": f"{args.method} (tblite), Gamma-point HOMO-LUMO gap, the smaller "
        "of two supercells of the primitive cell", "gap_unit": "eV",
        "thresholds_ev": {"metal_below": METAL_BELOW, "semiconductor_below": SEMICONDUCTOR_BELOW},
        "cutoff_angstrom": PERIODIC_CUTOFF, "render_config": config.to_dict(), "seed": args.seed,
        "scales": list(args.scales), "strained": args.strained, "rattled": args.rattled,
        "min_length_angstrom": args.min_length, "max_atoms": args.max_atoms, "pool_size": len(pool),
        "n_attempted": len(tasks), "n_kept": len(kept), "n_failed": n_failed,
        "gaps_ev": gaps.round(6).tolist(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    dataset = ImageDataset(images, labels, BANDGAP_CLASSES, [r["id"] for r in kept], metadata)
    npz = dataset.save(args.out / "images.npz")
    elements = sorted({int(z) for r in kept for z in r["atoms"].numbers})
    save_legend(args.out / "legend", elements=elements, config=config, cutoff=PERIODIC_CUTOFF)
    with atomic_output(args.out / "crystals.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prototype", "formula", "scale", "n_atoms", "supercells", "gap_ev", "label",
                    "electronic_temperature_k"])
        for r, lab in zip(kept, labels):
            spec = r["spec"]
            cells = ";".join("x".join(map(str, c["repeats"])) for c in r["gap"]["supercells"])
            kelvin = max(c["electronic_temperature_k"] for c in r["gap"]["supercells"])
            w.writerow([r["id"], spec.prototype, spec.formula, spec.scale, len(r["atoms"]), cells,
                        f"{r['gap']['gap_ev']:.4f}", int(lab), f"{kelvin:g}"])
    structures = write_structures(kept, labels, BANDGAP_CLASSES, args.method, args.out / "structures.extxyz")
    summary = {
        "method": args.method, "n_attempted": len(tasks), "n_kept": len(kept), "n_failed": n_failed,
        "failures": failures, "class_counts": dataset.class_counts(), "pool_size": len(pool),
        "workers": args.workers, "seconds_compute": round(t_compute, 2),
        "seconds_total": round(time.perf_counter() - t0, 2), "output": str(npz), "structures": str(structures),
        "gaps_by_formula_ev": {f"{r['spec'].prototype}:{r['spec'].formula}:s{r['spec'].scale:g}":
                               round(r["gap"]["gap_ev"], 4) for r in kept if not r["spec"].rattle
                               and not any(r["spec"].strain)},
    }
    write_json(args.out / "summary.json", summary)
    log.info("kept %d of %d crystals (skipped %d); classes %s; %.1f s; wrote %s", len(kept), len(tasks),
             n_failed, dataset.class_counts(), summary["seconds_total"], npz)
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
