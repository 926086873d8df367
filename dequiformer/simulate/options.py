"""Command-line options shared by ``dequiformer md / markov / relax-bench`` and ``md_runs/`` scripts."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from ..calculator import DEQCalculator


def add_solver_arguments(parser: argparse.ArgumentParser, reuse_flag: bool = True) -> None:
    """``--tol``, ``--reuse-tol``, ``--max-iter``, ``--dtype``, ``--device`` (and ``--no-reuse``)."""
    if reuse_flag:
        parser.add_argument("--no-reuse", action="store_true",
                            help="solve every force call cold (no fixed-point reuse)")
    parser.add_argument("--tol", type=float, default=1e-4, help="relative residual of a cold solve")
    parser.add_argument("--reuse-tol", type=float, default=None,
                        help="relative residual of a warm-started solve (default: the checkpoint's deq.reuse_tol)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="solver iteration cap per force call (default: the checkpoint's deq.max_iter)")
    parser.add_argument("--predictor", type=int, choices=[1, 2, 3], default=None,
                        help="past fixed points a warm start is extrapolated from (default: the calculator's)")
    parser.add_argument("--correctors", type=int, default=None,
                        help="ASPC warm starts: this many damped steps from the linear extrapolation of the last "
                             "two fixed points instead of a solve to --reuse-tol (default: the checkpoint's "
                             "deq.correctors; needs a contractive layer)")
    parser.add_argument("--secant-memory", type=int, default=None,
                        help="secant pairs Anderson carries from one warm-started solve to the next (default: the "
                             "checkpoint's deq.secant_memory; 0: off)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    add_threads_argument(parser)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch CPU threads (timings on a busy machine are far steadier with 1)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 gives steadier timings on a busy machine")


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's CPU thread count from ``args.threads`` when given."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def add_structure_arguments(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--structure FILE`` (required unless a ``default`` is given) and ``--frame I``."""
    parser.add_argument("--structure", required=default is None, default=default,
                        help="start structure: a data set file (npz, OC20 lmdb, ASE db, extxyz) or any file "
                             "ase.io.read understands")
    parser.add_argument("--frame", type=int, default=0,
                        help="frame of --structure to start from (negative: from the end)")


def calculator_from_args(args: argparse.Namespace) -> "DEQCalculator":
    """A DEQCalculator for ``args.checkpoint`` with the solver options of :func:`add_solver_arguments`
    (also applies ``--threads``)."""
    from ..calculator import DEQCalculator

    apply_threads(args)
    return DEQCalculator(args.checkpoint, device=args.device, fp_reuse=not getattr(args, "no_reuse", False),
                         tol=args.tol, reuse_tol=args.reuse_tol, dtype=args.dtype,
                         max_iter=getattr(args, "max_iter", None), predictor=getattr(args, "predictor", None),
                         correctors=getattr(args, "correctors", None),
                         secant_memory=getattr(args, "secant_memory", None))


def user_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the errors a user can fix (missing or bad file, bad index, bad value) into
    ``SystemExit("error: ...")`` with the message, without a traceback."""
    def wrapped(args: argparse.Namespace) -> int:
        from ..data.readers import DataError
        from ..device import resolve_device
        from ..train.checkpoint import CheckpointError

        try:
            if getattr(args, "device", None) is not None:  # before any file is read or model built
                resolve_device(args.device, what="--device")
            return func(args)
        except (FileNotFoundError, CheckpointError, DataError, IndexError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from exc

    wrapped.__doc__ = func.__doc__
    wrapped.__name__ = getattr(func, "__name__", "run")
    return wrapped


def print_summary(summary: dict[str, Any], keys: tuple[str, ...] | None = None) -> None:
    """One ``key: value`` line per entry (floats to 4 significant digits)."""
    for key, value in summary.items():
        if keys is not None and key not in keys:
            continue
        if isinstance(value, list):
            continue
        text = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key}: {text}")
