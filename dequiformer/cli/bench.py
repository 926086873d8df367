"""``dequiformer bench solver``: fixed-point solver speed and f-evaluation counts."""
from __future__ import annotations

import argparse

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = sub.add_parser("solver", help="ours-anderson vs forward vs torchdeq anderson on one DEQuiformer layer")
    p.add_argument("--checkpoint", help="trained DEQuiformer checkpoint (default: random init of a small model)")
    p.add_argument("--molecules", type=int, default=16, help="batch size (molecules of 3-14 atoms)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative residual per graph")
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report here")


def run(args: argparse.Namespace) -> int:
    from ..bench.solver import BENCH_MODEL, bench_batch, run_solver_benchmark
    from ..models import build_model
    from .main import write_json

    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    if args.checkpoint:
        from ..train.checkpoint import load_model

        model = load_model(args.checkpoint).to(dtype)
        if not hasattr(model, "implicit_layer"):
            raise SystemExit(f"{args.checkpoint}: not a DEQuiformer checkpoint (model.name must be 'dequiformer')")
    else:
        model = build_model(BENCH_MODEL, {}).to(dtype)
    graph = bench_batch(model.cutoff, model.max_neighbors, dtype, args.molecules)
    report = run_solver_benchmark(model, graph, args.tol, args.max_iter, args.repeats)
    report["model"] = args.checkpoint or "random-init BENCH_MODEL"
    print(f"{'solver':<20}{'f_evals_mean':>14}{'batch_f_evals':>15}{'seconds':>10}{'residual_max':>14}{'converged':>11}")
    for c in report["cases"]:
        print(f"{c['solver']:<20}{c['f_evals_mean']:>14.2f}{c['batch_f_evals']:>15d}{c['seconds']:>10.3f}"
              f"{c['residual_max']:>14.2e}{c['converged']:>8d}/{c['graphs']}")
    write_json(args.json, report)
    return 0
