"""``dequiformer train CONFIG [--set section.key=value ...] [--run-dir DIR] [--resume RUN_DIR]``.

Distributed: ``torchrun --nproc_per_node N --no-python dequiformer train CONFIG ...`` (each
process takes ``train.batch_size`` structures per step; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from .main import add_overrides_option, run_reporting_input_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (not needed with --resume)")
    add_overrides_option(parser)
    parser.add_argument("--run-dir", help="output directory (default: runs/<config name>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    parser.add_argument("--json", metavar="OUT", help="write a summary (run_dir, last epoch's metrics, best epoch) here")


def run(args: argparse.Namespace) -> int:
    """Train (or resume); configuration and data errors are reported in one line, exit status 2."""
    return run_reporting_input_errors("train", _run, args)


def _run(args: argparse.Namespace) -> int:
    from ..config import apply_override, load_config
    from ..train.checkpoint import load_checkpoint
    from ..train.distributed import init_distributed, shutdown
    from ..train.settings import resolve_train
    from ..train.trainer import Trainer

    state = None
    if args.resume:
        run_dir = Path(args.resume)
        if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
            raise ValueError("--resume continues in RUN_DIR; do not also give a different --run-dir")
        state = load_checkpoint(run_dir / "last.pt")
        cfg = state["config"]
        if args.config:
            print(f"note: resuming from {run_dir / 'last.pt'}; its saved config is used, not {args.config}",
                  file=sys.stderr)
        for item in args.overrides:
            apply_override(cfg, item)
    else:
        if not args.config:
            raise ValueError("give a CONFIG file (or --resume RUN_DIR)")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / Path(args.config).stem
        if (run_dir / "last.pt").exists():
            raise ValueError(f"{run_dir} already holds a checkpoint (last.pt); continue it with "
                             f"--resume {run_dir} or choose another --run-dir")
    info = init_distributed(resolve_train(cfg.get("train")).get("device", "auto"))
    fresh = not run_dir.exists()
    try:
        summary = Trainer(cfg, run_dir, resume_state=state, info=info).fit()
    except BaseException:
        # a run that failed before its first checkpoint leaves no half-made run directory behind
        # (the trainer has released the run's train.log by the time its errors reach here)
        if fresh and info.is_main and run_dir.is_dir() and not (run_dir / "last.pt").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        shutdown(info)
    if info.is_main:
        from ..rundir import write_json

        write_json(args.json, summary)
        best = summary["best"]
        print(f"done: {run_dir} (best epoch {best['epoch']}, {best['metric']} MAE {best['value']:.5g})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m dequiformer.cli.train``), e.g. for ``torchrun -m``."""
    parser = argparse.ArgumentParser(prog="dequiformer train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
