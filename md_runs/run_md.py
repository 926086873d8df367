#!/usr/bin/env python
"""Molecular dynamics with the DEQuiformer ASE calculator: velocity Verlet (NVE) or Langevin (NVT).

Writes an ASE trajectory and a per-step CSV log (step, time_fs, T_K, E_pot_eV, E_tot_eV,
solver_steps, residual, reused, ms) and prints a summary (solver steps per MD step with and
without fixed-point reuse, energy drift in eV/atom/ps for NVE). Same options as
``dequiformer md``; here ``--traj`` and ``--log`` default to ``md.traj`` and ``md.csv``.

Example:
    python md_runs/run_md.py run/best.pt --structure data/aspirin.npz --frame 0 \
        --steps 1000 --dt 0.5 --temperature 500 --ensemble nve --traj aspirin.traj --log aspirin.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from dequiformer.cli import md as md_cli
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dequiformer.cli import md as md_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    md_cli.add_arguments(parser)
    parser.set_defaults(traj="md.traj", log="md.csv")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    return md_cli.run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
