"""``dequiformer relax-bench``: relaxation cost with and without fixed-point reuse (paper table)."""
from __future__ import annotations

import argparse

from ..simulate.options import add_threads_argument, apply_threads, print_summary, user_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="DEQuiformer (3 rows: cold, reuse at --tol, reuse at --reuse-tol) and/or "
                             "EquiformerV2 (1 row) checkpoints")
    parser.add_argument("--data", required=True,
                        help="start structures: OC20 lmdb (one per sid), ASE db, extxyz or npz (first n)")
    parser.add_argument("--n-systems", type=int, default=100, help="number of start structures")
    parser.add_argument("--steps", type=int, default=100, help="maximum optimiser steps per system")
    parser.add_argument("--optimizer", choices=["lbfgs", "bfgs", "fire"], default="lbfgs")
    parser.add_argument("--fmax", type=float, default=0.05, help="force convergence threshold (eV/A)")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative residual of cold (and deq_reuse) solves")
    parser.add_argument("--reuse-tol", type=float, default=1e-1,
                        help="relaxed warm-start residual of the deq_reuse_relaxed rows")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default="cpu", help="torch device")
    add_threads_argument(parser)
    parser.add_argument("--json", help="write the result JSON here")
    parser.add_argument("--report", help="folder for relax_bench.md and relax_bench.png")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


@user_errors
def run(args: argparse.Namespace) -> int:
    from ..simulate.relax_bench import markdown_table, run_relax_bench, write_report
    from ..rundir import write_json

    apply_threads(args)
    result = run_relax_bench(args.checkpoints, args.data, n_systems=args.n_systems, steps=args.steps,
                             optimizer=args.optimizer, fmax=args.fmax, tol=args.tol, reuse_tol=args.reuse_tol,
                             dtype=args.dtype, device=args.device, progress=not args.quiet)
    print(markdown_table(result))
    print_summary(result, ("n_systems", "optimizer", "fmax", "steps"))
    write_json(args.json, result)
    if args.report:
        write_report(result, args.report)
    return 0
