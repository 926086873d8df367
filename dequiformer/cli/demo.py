"""``dequiformer demo``: the README's main job on the bundled models and data."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assets", help="folder with deq.pt, explicit8.pt, deq_conservative.pt, "
                                         "explicit8_conservative.pt, aspirin_heldout.npz, slab_deq.pt, "
                                         "slab_explicit8.pt, slab_heldout.lmdb (default: bundled)")
    parser.add_argument("--out", default="demo_out", help="report folder (report.md, solver_steps.png)")
    parser.add_argument("--md-steps", type=int, default=200, help="NVE MD steps per row")
    parser.add_argument("--temperature", type=float, default=500.0, help="K")
    parser.add_argument("--dt", type=float, default=0.5, help="fs")
    parser.add_argument("--eval-frames", type=int, default=200)
    parser.add_argument("--markov-frames", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--reuse-tol", type=float, default=None,
                        help="relative residual of warm-started direct-force DEQ solves (default: the checkpoint's "
                             "deq.reuse_tol, as the calculator)")
    parser.add_argument("--conservative-reuse-tol", type=float, default=None,
                        help="relative residual of the conservative DEQ's warm-started solves and adjoint (default: "
                             "the checkpoint's deq.reuse_tol)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-relax", action="store_true", help="skip the second act (a slab relaxation)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", help="write the numbers here")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..demo import run_demo, table
    from ..rundir import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    report = run_demo(args.assets, args.out, args.md_steps, args.temperature, args.dt, args.eval_frames,
                      args.markov_frames, args.seed, progress=not args.quiet, reuse_tol=args.reuse_tol,
                      conservative_reuse_tol=args.conservative_reuse_tol, relax=not args.no_relax)
    print(table(report))
    m = report["markov"]
    print(f"\nspeed-up of DEQ with reuse vs explicit: {report['speedup_vs_explicit']:.2f}x direct, "
          f"{report['conservative_speedup_vs_explicit']:.2f}x conservative; "
          f"Markov check: mean force difference {100 * m['force_rel_diff_mean']:.3f} % over {m['frames']} frames")
    act = report.get("relaxation")
    if act:
        from ..demo import relaxation_table

        print(f"\nslab relaxation, {act['system']} ({act['atoms']} atoms, FIRE to fmax {act['fmax']} eV/A):")
        print(relaxation_table(act))
        print(f"DEQ with reuse: {act['speedup_vs_explicit']:.2f}x the explicit model's speed")
    print(f"report: {args.out}/report.md, plot: {args.out}/solver_steps.png ({report['seconds_total']:.0f} s)")
    write_json(args.json, report)
    return 0
