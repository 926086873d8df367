"""``dequiformer markov``: warm-started vs cold forces along consecutive frames (Markov check)."""
from __future__ import annotations

import argparse

from ..simulate.options import add_solver_arguments, print_summary, user_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="DEQuiformer checkpoint (.pt); explicit models are refused")
    parser.add_argument("--data", required=True, help="trajectory data (npz, OC20 lmdb, ASE db, extxyz)")
    parser.add_argument("--frames", type=int, default=100, help="number of consecutive frames N (>= 2)")
    parser.add_argument("--start", type=int, default=0, help="index of the first frame")
    add_solver_arguments(parser, reuse_flag=False)
    parser.add_argument("--json", help="write the result JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@user_errors
def run(args: argparse.Namespace) -> int:
    from ..simulate.markov import markov_check
    from ..simulate.options import apply_threads
    from ..simulate.structures import open_dataset
    from ..train.checkpoint import load_model
    from ..rundir import write_json

    apply_threads(args)
    model = load_model(args.checkpoint)
    dataset = open_dataset(args.data)
    if dataset is None:
        raise ValueError(f"{args.data}: not a data set file the readers know (npz, OC20 lmdb, ASE db, extxyz)")
    result = markov_check(model, dataset, frames=args.frames, start=args.start, tol=args.tol,
                          reuse_tol=args.reuse_tol, dtype=args.dtype, device=args.device,
                          progress=not args.quiet, where=str(args.checkpoint), max_iter=args.max_iter,
                          predictor=args.predictor, correctors=args.correctors,
                          secant_memory=args.secant_memory)
    result.update({"checkpoint": str(args.checkpoint), "data": str(args.data)})
    print_summary(result)
    write_json(args.json, result)
    return 0
