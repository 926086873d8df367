#!/usr/bin/env python
"""Geometry optimisation with the DEQuiformer ASE calculator: BFGS, LBFGS or FIRE.

Writes an ASE trajectory and a per-step CSV log (step, E_pot_eV, fmax_eV_per_A,
solver_steps, residual, reused, ms) and prints a summary. FixAtoms constraints of the start
structure (e.g. OC20 ``fixed`` atoms) are respected; fmax is over the free atoms.

Without arguments it relaxes the first bundled held-out EMT slab (an adsorbate/metal pair the
model never saw) with the bundled slab DEQuiformer.

Example:
    python md_runs/relax.py                                   # bundled slab model and structure
    python md_runs/relax.py run/best.pt --structure data/emt_val.lmdb --frame 0 \
        --optimizer lbfgs --fmax 0.05 --steps 200 --traj relax.traj --log relax.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from dequiformer.simulate import options
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dequiformer.simulate import options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    from dequiformer.demo import ASSETS

    parser.add_argument("checkpoint", nargs="?", default=str(ASSETS / "slab_deq.pt"),
                        help="DEQuiformer or EquiformerV2 checkpoint (.pt); default: the bundled slab DEQuiformer")
    options.add_structure_arguments(parser, default=str(ASSETS / "slab_heldout.lmdb"))
    parser.add_argument("--optimizer", choices=["bfgs", "lbfgs", "fire"], default="lbfgs")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence threshold (eV/A)")
    parser.add_argument("--steps", type=int, default=200, help="maximum optimiser steps")
    parser.add_argument("--maxstep", type=float, default=None,
                        help="largest step per atom (A); the optimiser's default if unset")
    options.add_solver_arguments(parser)
    parser.add_argument("--relax-cell", action="store_true",
                        help="relax the lattice too (ASE's FrechetCellFilter; conservative models, 3D-periodic cells)")
    parser.add_argument("--traj", default="relax.traj", help="ASE trajectory of every step")
    parser.add_argument("--log", default="relax.csv", help="per-step CSV log")
    parser.add_argument("--json", help="write the summary JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@options.user_errors
def run(args: argparse.Namespace) -> int:
    """Relax the structure; print (and optionally write) the summary."""
    from dequiformer.rundir import write_json
    from dequiformer.simulate.relax import run_relaxation
    from dequiformer.simulate.structures import load_structure

    atoms = load_structure(args.structure, args.frame)
    calc = options.calculator_from_args(args)
    result = run_relaxation(atoms, calc, optimizer=args.optimizer, fmax=args.fmax, steps=args.steps,
                            maxstep=args.maxstep, traj=args.traj, log=args.log, progress=not args.quiet,
                            cell=args.relax_cell)
    summary = {**result.summary(), "fp_reuse": calc.fp_reuse, "checkpoint": str(args.checkpoint),
               "structure": str(args.structure), "frame": args.frame,
               "final_volume_a3": result.rows[-1]["volume_A3"]}
    options.print_summary(summary)
    write_json(args.json, summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
