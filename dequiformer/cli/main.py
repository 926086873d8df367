"""``dequiformer`` console entry point.

Each subcommand lives in its own module ``dequiformer.cli.<module>`` that defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command runs, so a broken optional dependency of one command does not
break the others.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dequiformer.cli.train", "train a force field from a YAML config (resume, torchrun)"),
    "eval": ("dequiformer.cli.eval", "energy / force errors of a checkpoint on a data set"),
    "bench": ("dequiformer.cli.bench", "benchmarks: solver, accuracy (configs at equal budget), train (cost per training step), nve (energy drift), md (speed vs size)"),
    "md": ("dequiformer.cli.md", "molecular dynamics (NVE / Langevin) with the DEQ ASE calculator"),
    "refit-references": ("dequiformer.cli.refit", "re-fit the per-element energy references on the training frames"),
    "markov": ("dequiformer.cli.markov", "warm-started vs cold forces along a trajectory (Markov check)"),
    "relax-bench": ("dequiformer.cli.relax_bench", "relaxation benchmark: cold / reuse / relaxed-reuse vs explicit"),
    "classify": ("dequiformer.cli.classify", "graph-image classifiers: train, predict, bench (DEQ conv, Anderson vs forward)"),
    "plot": ("dequiformer.cli.plot", "learning curves of training runs from their metrics.csv"),
    "demo": ("dequiformer.cli.demo", "the bundled demo: explicit vs DEQ (cold, reuse) on aspirin"),
}


def add_overrides_option(parser: argparse.ArgumentParser, help_text: str = "override config values") -> None:
    """The one ``--set SECTION.KEY=VALUE ...`` option of every command that reads a config: one or
    more values per flag, the flag repeatable; collected in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"{help_text}, e.g. --set train.epochs=10 train.lr=1e-3 (repeatable)")


def run_reporting_input_errors(command: str, body: Callable[[argparse.Namespace], int],
                               args: argparse.Namespace) -> int:
    """Run ``body(args)``; a configuration or data error (ValueError, FileNotFoundError, KeyError)
    becomes one line ``dequiformer COMMAND: error: ...`` on stderr and exit status 2."""
    try:
        return body(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"dequiformer {command}: error: {exc}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dequiformer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        # every command's --help shows its defaults
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..log import setup_logging

    setup_logging()
    parser = _build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
