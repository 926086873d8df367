"""``dequiformer classify train|predict|bench``: implicit conv classifiers for (graph) images.

* ``train CONFIG``: Adam + cosine schedule; ``metrics.csv``, ``last.pt`` / ``best.pt``,
  ``confusion_matrix.png`` and ``summary.json`` in the run directory; ``--resume``.
* ``predict CONFIG|CHECKPOINT``: class probabilities of a data split -> CSV.
* ``bench CONFIG``: the same model and seed trained with Anderson and with forward
  iteration; time to ``train.target_accuracy``, last / plateau accuracies, f evaluations
  per batch per epoch, residual-against-time traces on one batch and a PNG
  (:mod:`dequiformer.classify.bench`).

A config with ``model.name: dequiformer`` (or ``equiformer_v2``) and ``task:
classification`` learns the same labels from 3D structures (an extxyz file with
``info["label"]``); see :mod:`dequiformer.classify.structures`.

Progress lines come from the ``dequiformer.classify`` loggers (:mod:`dequiformer.log` sends
them to stdout); the final table / result line is printed here.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from .main import add_overrides_option

SOLVER_CHOICES = ("anderson", "forward")


def _common(p: argparse.ArgumentParser, config_help: str) -> None:
    p.add_argument("config", help=config_help)
    add_overrides_option(p)
    p.add_argument("--run-dir", type=Path, help="output folder (default: runs/classify/<config name>)")
    p.add_argument("--json", help="write the report (JSON) here")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train a DEQ conv (images) or DEQuiformer (3D structures) classifier")
    _common(p, "YAML config (sections model, deq, data, train)")
    p.add_argument("--resume", nargs="?", const="last", metavar="CHECKPOINT",
                   help="continue from CHECKPOINT (default: <run-dir>/last.pt)")
    p = sub.add_parser("predict", help="write predictions of a trained classifier to CSV")
    _common(p, "YAML config whose data section names the images, or a checkpoint (.pt) whose config is used")
    p.add_argument("--checkpoint", type=Path, help="checkpoint (default: the positional .pt or <run-dir>/best.pt)")
    p.add_argument("--split", choices=("test", "train", "all"), default="test", help="which images (default test)")
    p.add_argument("--out", type=Path, help="predictions CSV (default: <run-dir>/predictions_<split>.csv)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p = sub.add_parser("bench", help="Anderson vs forward iteration: time to target accuracy, f evaluations")
    _common(p, "YAML config (sections model, deq, data, train)")
    p.add_argument("--solvers", default="anderson,forward", help="comma-separated (default anderson,forward)")
    p.add_argument("--plateau-epochs", type=int, default=3,
                   help="epochs averaged for the plateau accuracies (default 3)")
    p.add_argument("--trace-iters", type=int, default=60,
                   help="f evaluations of each residual-against-time trace (default 60)")
    p.add_argument("--figure", type=Path, help="bench PNG (default <run-dir>/bench.png)")


def _default_run_dir(config: str, action: str) -> Path:
    stem = Path(config).stem
    return Path("runs") / "classify" / (f"{stem}-bench" if action == "bench" else stem)


def _train(args: argparse.Namespace) -> int:
    from ..classify.train import train_classifier
    from ..config import load_config
    from ..rundir import write_json

    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or _default_run_dir(args.config, "train")
    resume = None
    if args.resume is not None:
        resume = run_dir / "last.pt" if args.resume == "last" else Path(args.resume)
        if not resume.is_file():
            raise FileNotFoundError(f"--resume: checkpoint not found: {resume}")
    summary = train_classifier(cfg, run_dir, resume=resume)
    print(f"train acc {summary['train_acc']:.4f}, test acc {summary['test_acc']}, "
          f"{summary['seconds']:.1f} s; outputs in {run_dir}")
    write_json(args.json, summary)
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Either route: the checkpoint says which; a YAML config must be for the same route."""
    from ..classify.predict import predict_split
    from ..config import load_config
    from ..rundir import write_json

    run_dir = args.run_dir or _default_run_dir(args.config, "train")
    positional_ckpt = Path(args.config).suffix in (".pt", ".pth")
    checkpoint = args.checkpoint or (Path(args.config) if positional_ckpt else run_dir / "best.pt")
    # a checkpoint as the positional argument: its own config, with the --set overrides applied
    cfg = None if positional_ckpt else load_config(args.config, args.overrides)
    report = predict_split(checkpoint, cfg, args.split, args.out, args.batch_size, args.device,
                           overrides=args.overrides if positional_ckpt else ())
    acc = "n/a" if report["accuracy"] is None else f"{report['accuracy']:.4f}"
    print(f"{report['n']} predictions ({args.split} split), accuracy {acc}; wrote {report['output']}")
    write_json(args.json, report)
    return 0


def _num(value: float | None, digits: int) -> str:
    """``value`` with ``digits`` decimals, ``-`` for ``None``."""
    return "-" if value is None else f"{value:.{digits}f}"


def _bench(args: argparse.Namespace) -> int:
    from ..classify.train import bench_solvers
    from ..config import load_config
    from ..rundir import write_json

    solvers = [s.strip() for s in args.solvers.split(",") if s.strip()]
    bad = [s for s in solvers if s not in SOLVER_CHOICES]
    if bad or not solvers:
        raise ValueError(f"--solvers: unknown solver(s) {bad}; choose from {SOLVER_CHOICES}")
    cfg = load_config(args.config, args.overrides)
    run_dir = args.run_dir or _default_run_dir(args.config, "bench")
    report = bench_solvers(cfg, run_dir, solvers, plateau_epochs=args.plateau_epochs, trace_iters=args.trace_iters,
                           figure=args.figure)
    print(f"{'solver':<10}{'epochs':>7}{'train_acc':>10}{'test_acc':>10}{'plateau_tr':>11}{'plateau_te':>11}"
          f"{'seconds':>9}{'to_target':>10}{'f_evals':>9}{'b_evals':>9}{'conv':>6}")
    for r in report["rows"]:
        print(f"{r['solver']:<10}{r['epochs']:>7d}{_num(r['train_acc'], 4):>10}{_num(r['test_acc'], 4):>10}"
              f"{_num(r['plateau_train_acc'], 4):>11}{_num(r['plateau_test_acc'], 4):>11}{r['seconds']:>9.1f}"
              f"{_num(r['seconds_to_target'], 1):>10}{r['mean_f_evals']:>9.2f}{r['mean_b_evals']:>9.2f}"
              f"{r['converged_fraction']:>6.2f}")
    for r in report["rows"]:
        print(f"{r['solver']} f evals per batch by epoch: {' '.join(f'{v:.1f}' for v in r['f_evals_per_epoch'])}")
    for run in (report["crossover"] or {}).get("runs", []):
        print(f"residual on one batch, {run['model']} model: anderson below forward from "
              f"{_num(run.get('crossover_seconds'), 2)} s; seconds to tol "
              + ", ".join(f"{s} {_num(t, 2)}" for s, t in run["seconds_to_tol"].items()))
    print(f"figure: {report['figure']}")
    write_json(args.json, report)
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch ``args.action``; configuration and data errors print one line and return 2."""
    try:
        return {"train": _train, "predict": _predict, "bench": _bench}[args.action](args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"dequiformer classify {args.action}: error: {message}", file=sys.stderr)
        return 2
