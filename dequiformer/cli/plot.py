"""``dequiformer plot RUN_DIR [RUN_DIR ...]``: learning curves from the runs' ``metrics.csv``."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories of dequiformer train")
    parser.add_argument("--out", default=None, help="PNG to write (default: RUN_DIR/learning_curves.png of the first)")
    parser.add_argument("--x", choices=("epoch", "time"), default="epoch", help="x axis: epoch or wall time")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..train.plot import plot_runs

    out = args.out or str(Path(args.run_dirs[0]) / "learning_curves.png")
    try:
        path = plot_runs(args.run_dirs, out, x=args.x)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dequiformer plot: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
