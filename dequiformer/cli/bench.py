"""``dequiformer bench solver | accuracy | nve | md | profile | batched``: solver speed and f-evaluation
counts; accuracy of several configs trained on the same data under the same budget; NVE energy
conservation; MD speed and memory against system size; where one force call's time goes."""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
from .main import add_overrides_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for add in (_solver_arguments, _accuracy_arguments, _train_cost_arguments, _nve_arguments, _md_arguments,
                _profile_arguments, _batched_arguments):
        add(sub)


def _checkpoints_and_structure(p: argparse.ArgumentParser, checkpoints_help: str, structure_help: str) -> None:
    """``--checkpoint [LABEL=]PATH ...``, ``--structure FILE``, ``--frame I`` (read by
    :func:`_demo_models_and_molecule`)."""
    p.add_argument("--checkpoint", dest="checkpoints", nargs="+", action="extend", default=[], metavar="[LABEL=]PATH",
                   help=checkpoints_help)
    p.add_argument("--structure", default=None, help=structure_help)
    p.add_argument("--frame", type=int, default=0)


def _device_and_output(p: argparse.ArgumentParser, name: str) -> None:
    """``--dtype``, ``--device``, ``--threads`` (1 by default: steadier timings), ``--out`` (default
    ``bench_NAME``), ``--json`` (default ``OUT/NAME.json``) and ``--quiet``."""
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (per case; default 1)")
    p.add_argument("--out", default=f"bench_{name}", help="output folder (PNG, JSON)")
    p.add_argument("--json", help=f"write the report here (default OUT/{name}.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _solver_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("solver", help="ours-anderson vs forward vs torchdeq anderson on one DEQuiformer layer",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="trained DEQuiformer checkpoint (default: random init of a small model)")
    p.add_argument("--molecules", type=int, default=16, help="batch size (molecules of 3-14 atoms)")
    p.add_argument("--tol", type=float, default=1e-4, help="relative residual per graph")
    p.add_argument("--max-iter", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the report here")


def _accuracy_arguments(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("accuracy", help="train configs on the same data and budget, evaluate on a held-out file",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("configs", nargs="*", help="YAML configs (default: the demo's DEQ and 8-block explicit model)")
    a.add_argument("--data", required=True, help="training data (the configs' data.path is replaced by it)")
    a.add_argument("--heldout", default=None,
                   help="held-out file to evaluate on (default: the bundled aspirin_heldout.npz)")
    budget = a.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="train every config for this many epochs")
    budget.add_argument("--seconds", type=float,
                        help="wall-clock budget per config: the learning rate decays over it (train.lr_schedule: "
                             "seconds) and training stops when it is spent")
    add_overrides_option(a, "overrides applied to every config")
    a.add_argument("--parallel", type=int, default=2, help="configs trained at the same time (default 2)")
    a.add_argument("--threads", type=int, default=1, help="threads per training process (default 1)")
    a.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K (every training and evaluation)")
    a.add_argument("--eval-max-iter", type=int, default=40,
                   help="solver steps per held-out solve of a DEQ (the shipped models' inference budget; a "
                        "training config's deq.max_iter may leave solves unconverged)")
    a.add_argument("--out", default="bench_accuracy", help="output folder (runs, logs, PNG)")
    a.add_argument("--json", help="write the report here (default OUT/accuracy.json)")


def _train_cost_arguments(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="training cost per step: time, resident and allocated memory, per step kind",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("configs", nargs="*", help="YAML configs (default: the demo's DEQ and 8-block explicit model)")
    t.add_argument("--data", default=None,
                   help="training data (the configs' data.path is replaced by it; default: the bundled held-out "
                        "aspirin frames, enough for the demo configs)")
    t.add_argument("--steps", type=int, default=24,
                   help="timed training steps per config (rounded up to whole cycles of step kinds)")
    add_overrides_option(t, "overrides applied to every config")
    t.add_argument("--reference", default=None, help="the config name the ratios are taken to (default: the last)")
    t.add_argument("--threads", type=int, default=1, help="threads per training process (default 1)")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    t.add_argument("--out", default="bench_train", help="output folder (PNG, JSON)")
    t.add_argument("--json", help="write the report here (default OUT/train.json)")


def _nve_arguments(sub: argparse._SubParsersAction) -> None:
    n = sub.add_parser("nve", help="NVE total-energy drift: direct vs conservative, DEQ cold vs reuse, explicit",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoints_and_structure(n, "checkpoints to compare (default: the bundled demo models)",
                               "start structure (default: frame 0 of the bundled held-out aspirin)")
    n.add_argument("--steps", type=int, default=4000, help="MD steps per case (default 4000 = 2 ps at 0.5 fs)")
    n.add_argument("--dt", type=float, default=0.5, help="time step (fs)")
    n.add_argument("--temperature", type=float, default=300.0, help="initial temperature (K)")
    n.add_argument("--seed", type=int, default=0, help="seed of the initial velocities (the same for every case)")
    n.add_argument("--tol", type=float, default=1e-4, help="relative residual of cold solves")
    n.add_argument("--reuse-tols", type=float, nargs="+", default=[1e-1, 1e-2, 1e-3],
                   help="reuse tolerances to compare (default 1e-1 1e-2 1e-3)")
    n.add_argument("--adjoint-tol", type=float, default=None,
                   help="relative residual of a conservative DEQ's adjoint solve (default: that of the same call's "
                        "fixed-point solve)")
    n.add_argument("--modes", nargs="+", choices=["direct", "conservative"], default=None,
                   help="force modes to run each model in (default: the model's own)")
    n.add_argument("--skip-cold", action="store_true", help="no cold-solve case for DEQ models")
    n.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    n.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K")
    n.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    n.add_argument("--out", default="bench_nve", help="output folder (PNG, JSON)")
    n.add_argument("--json", help="write the report here (default OUT/nve.json)")
    n.add_argument("--quiet", action="store_true", help="no progress bar")


def _md_arguments(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("md", help="ms per MD step against system size: explicit, DEQ cold, reuse, predictor",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoints_and_structure(m, "checkpoints (default: the bundled demo DEQ and explicit models)",
                               "the molecule to replicate (default: bundled held-out aspirin)")
    m.add_argument("--copies", type=int, nargs="+", default=[1, 8, 27, 64],
                   help="copies of the molecule per system (default 1 8 27 64: 21-1344 aspirin atoms)")
    m.add_argument("--periodic", action="store_true", help="make each system a periodic box (cell = the grid)")
    m.add_argument("--steps", type=int, nargs="+", default=[10],
                   help="NVE MD steps per case after the first call: one count, or one per --copies entry (more "
                        "steps for small systems, whose steps take milliseconds)")
    m.add_argument("--repeats", type=int, default=3,
                   help="round-robin runs of each size's cases; rows keep the median (a shared machine's load drifts)")
    m.add_argument("--tol", type=float, default=1e-4, help="relative residual of cold solves")
    m.add_argument("--reuse-tol", type=float, default=None,
                   help="relative residual of warm-started solves (default: the calculator's, i.e. each checkpoint's "
                        "deq.reuse_tol)")
    m.add_argument("--no-isolate", action="store_true",
                   help="run the cases in this process (faster; peak_rss_mb is then this process's peak so far)")
    _device_and_output(m, "md")


def _profile_arguments(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="where one force call's time goes (torch.profiler), per stage and operator",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoints_and_structure(p, "checkpoints (default: the bundled demo DEQ and explicit models)",
                               "the molecule to replicate (default: bundled held-out aspirin)")
    p.add_argument("--copies", type=int, nargs="+", default=[1, 64],
                   help="copies of the molecule per system (default 1 64: 21 and 1344 aspirin atoms)")
    p.add_argument("--calls", type=int, default=5, help="profiled NVE MD steps per case (and as many timed without)")
    p.add_argument("--warmup", type=int, default=4, help="MD steps before profiling (the warm starts' history)")
    p.add_argument("--dt", type=float, default=0.5, help="MD time step (fs)")
    p.add_argument("--top", type=int, default=12, help="torch operators listed per case")
    _device_and_output(p, "profile")


def _batched_arguments(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("batched", help="many systems' MD at once through TorchSim vs one-by-one ASE calls "
                                       "(needs the torchsim extra)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _checkpoints_and_structure(b, "checkpoints (default: the bundled demo DEQ and explicit models)",
                               "the molecule to copy (default: bundled held-out aspirin)")
    b.add_argument("--systems", type=int, nargs="+", default=[1, 4, 16], help="systems per run (default 1 4 16)")
    b.add_argument("--steps", type=int, default=10, help="NVE MD steps per system (default 10)")
    b.add_argument("--tol", type=float, default=1e-4, help="relative residual of cold solves")
    b.add_argument("--reuse-tol", type=float, default=None,
                   help="relative residual of warm-started solves (default: the calculator's)")
    _device_and_output(b, "batched")


def run(args: argparse.Namespace) -> int:
    if args.bench == "batched":
        return _run_batched(args)
    if args.bench == "accuracy":
        return _run_accuracy(args)
    if args.bench == "train":
        return _run_train_cost(args)
    if args.bench == "nve":
        return _run_nve(args)
    if args.bench == "md":
        return _run_md_speed(args)
    if args.bench == "profile":
        return _run_profile(args)
    return _run_solver(args)


def _checkpoint_specs(specs: list[str], default: list[str]) -> dict[str, str]:
    """``[LABEL=]PATH`` arguments as ``{label: path}`` (label: the file's stem); missing files raise."""
    from pathlib import Path

    out = {}
    for spec in specs or default:
        label, _, path = spec.rpartition("=")
        if not Path(path).exists():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        out[label or Path(path).stem] = path
    return out


def _demo_models_and_molecule(args: argparse.Namespace) -> tuple[dict[str, str], Any]:
    """``--checkpoint`` specs (default: the bundled demo DEQ and 8-block model) and the molecule of
    ``--structure`` / ``--frame`` (default: the first bundled held-out aspirin frame)."""
    from ..demo import ASSETS
    from ..simulate.structures import load_structure

    checkpoints = _checkpoint_specs(args.checkpoints, [str(ASSETS / "deq.pt"), str(ASSETS / "explicit8.pt")])
    return checkpoints, load_structure(args.structure or str(ASSETS / "aspirin_heldout.npz"), args.frame)


def _size_benchmark(name: str, args: argparse.Namespace, check: str | None,
                    run: Callable[[dict[str, str], Any], dict[str, Any]]) -> dict[str, Any] | None:
    """The shared start of ``bench md / profile / batched``: ``check`` (a message when the sizes or
    steps are out of range, else None), the checkpoints and molecule of the command line, then
    ``run(checkpoints, molecule)``, whose report gets the ``checkpoints``. A user error (bad value,
    missing file, bad frame, bad checkpoint, a failed case) is printed as ``dequiformer bench NAME:
    error: ...`` and gives None."""
    import sys

    from ..device import resolve_device
    from ..train.checkpoint import CheckpointError

    try:
        if check:
            raise ValueError(check)
        resolve_device(args.device, what="--device")  # a device this machine lacks: one line, before any case
        checkpoints, molecule = _demo_models_and_molecule(args)
        return {**run(checkpoints, molecule), "checkpoints": checkpoints}
    except (ValueError, FileNotFoundError, IndexError, CheckpointError, RuntimeError) as exc:
        print(f"dequiformer bench {name}: error: {exc}", file=sys.stderr)
        return None


def _run_md_speed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench.md_speed import plot_md_speed, run_md_speed_benchmark
    from ..rundir import write_json

    def run(checkpoints: dict[str, str], molecule: Any) -> dict[str, Any]:
        return run_md_speed_benchmark(checkpoints, molecule, args.copies, args.periodic, args.steps, tol=args.tol,
                                      reuse_tol=args.reuse_tol, dtype=args.dtype, device=args.device,
                                      threads=args.threads, isolate=not args.no_isolate, progress=not args.quiet,
                                      repeats=args.repeats)

    problem = None
    if min(args.steps) < 1 or min(args.copies) < 1 or args.repeats < 1:
        problem = (f"need --steps >= 1, --copies >= 1 and --repeats >= 1 (got {args.steps}, {args.copies}, "
                   f"{args.repeats})")
    report = _size_benchmark("md", args, problem, run)
    if report is None:
        return 2
    out = Path(args.out)
    report["plot"] = str(plot_md_speed(report, out / "md_speed.png"))
    print(f"{'atoms':>6} {'checkpoint':<14}{'model':<15}{'ms/step':>9}{'solver':>8}{'peak MB':>9}")
    for r in report["rows"]:
        print(f"{r['atoms']:>6} {r['checkpoint']:<14}{r['model']:<15}{r['ms_per_step']:>9.1f}{r['solver_steps']:>8.2f}"
              f"{r['peak_rss_mb']:>9.0f}")
    for r in report["ratios"]:
        if len(r) > 1:
            print(f"{r['atoms']:>6} atoms: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k != "atoms"))
    write_json(args.json or out / "md.json", report)
    return 0


def _run_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..bench.profile import SHOWN, plot_profile, run_profile_benchmark
    from ..rundir import write_json

    def run(checkpoints: dict[str, str], molecule: Any) -> dict[str, Any]:
        return run_profile_benchmark(checkpoints, molecule, args.copies, calls=args.calls, warmup=args.warmup,
                                     dt_fs=args.dt, device=args.device, dtype=args.dtype, threads=args.threads,
                                     top=args.top, progress=not args.quiet)

    problem = f"need --copies >= 1 (got {args.copies})" if min(args.copies) < 1 else None
    report = _size_benchmark("profile", args, problem, run)
    if report is None:
        return 2
    out = Path(args.out)
    report["plot"] = str(plot_profile(report, out / "profile.png"))
    print(f"{'atoms':>6} {'checkpoint':<14}{'ms/call':>9}{'steps':>7}  " + " ".join(f"{s[:10]:>10}" for s in SHOWN))
    for r in report["rows"]:
        print(f"{r['atoms']:>6} {r['checkpoint']:<14}{r['ms_per_call']:>9.1f}{r['solver_steps']:>7.2f}  "
              + " ".join(f"{r['stages'][s]:>10.2f}" for s in SHOWN))
    write_json(args.json or out / "profile.json", report)
    return 0


def _run_batched(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..rundir import write_json

    try:
        from ..bench.batched import plot_batched, run_batched_benchmark
    except ImportError as exc:
        print(f"dequiformer bench batched: error: {exc}", file=sys.stderr)
        return 2
    def run(checkpoints: dict[str, str], molecule: Any) -> dict[str, Any]:
        return run_batched_benchmark(checkpoints, molecule, args.systems, args.steps, tol=args.tol,
                                     reuse_tol=args.reuse_tol, dtype=args.dtype, device=args.device,
                                     threads=args.threads, progress=not args.quiet)

    problem = None
    if args.steps < 1 or min(args.systems) < 1:
        problem = f"need --steps >= 1 and --systems >= 1 (got {args.steps}, {args.systems})"
    report = _size_benchmark("batched", args, problem, run)
    if report is None:
        return 2
    out = Path(args.out)
    report["plot"] = str(plot_batched(report, out / "batched.png"))
    print(f"{'checkpoint':<24}{'mode':<18}{'systems':>8}{'steps/s':>10}{'solver':>8}")
    for r in report["rows"]:
        solver = "" if r["solver_steps"] is None else f"{r['solver_steps']:.2f}"
        print(f"{r['checkpoint']:<24}{r['mode']:<18}{r['systems']:>8}{r['structure_steps_per_s']:>10.2f}{solver:>8}")
    for r in report["ratios"]:
        print(f"{r['checkpoint']}: {r['systems']} systems, batched / one-by-one throughput {r['batched_vs_one_by_one']:.2f}")
    write_json(args.json or out / "batched.json", report)
    return 0


def _run_nve(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..bench.nve import case_label, plot_nve, run_nve_benchmark
    from ..demo import ASSETS
    from ..device import resolve_device
    from ..simulate.options import apply_threads
    from ..simulate.structures import load_structure
    from ..train.checkpoint import CheckpointError, load_model
    from ..rundir import write_json

    try:
        apply_threads(args)
        device = resolve_device(args.device, what="--device")
        if args.steps < 2 or args.dt <= 0:
            raise ValueError(f"need --steps >= 2 and --dt > 0 (got {args.steps}, {args.dt})")
        checkpoints = _checkpoint_specs(args.checkpoints, [str(p) for p in sorted(ASSETS.glob("*.pt"))])
        models = {label: load_model(path, device=device) for label, path in checkpoints.items()}
        structure = args.structure or str(ASSETS / "aspirin_heldout.npz")
        atoms = load_structure(structure, args.frame)
        report = run_nve_benchmark(models, atoms, steps=args.steps, dt_fs=args.dt, temperature_k=args.temperature,
                                   seed=args.seed, tol=args.tol, reuse_tols=args.reuse_tols, modes=args.modes,
                                   dtype=args.dtype, progress=not args.quiet, adjoint_tol=args.adjoint_tol,
                                   cold=not args.skip_cold, device=device)
    except (ValueError, FileNotFoundError, IndexError, CheckpointError) as exc:
        print(f"dequiformer bench nve: error: {exc}", file=sys.stderr)
        return 2
    report.update({"structure": structure, "frame": args.frame, "checkpoints": checkpoints})
    out = Path(args.out)
    report["plot"] = str(plot_nve(report, out / "nve.png"))
    print(f"{'case':<44}{'drift eV/atom/ps':>18}{'fluct eV/atom':>15}{'solver':>8}{'adjoint':>8}{'ms/step':>9}")
    for r in report["rows"]:
        adj = "-" if not r["mean_adjoint_steps"] else f"{r['mean_adjoint_steps']:.1f}"
        print(f"{case_label(r):<44}{r['drift_ev_per_atom_per_ps']:>18.2e}{r['fluctuation_ev_per_atom']:>15.2e}"
              f"{r['mean_solver_steps']:>8.1f}{adj:>8}{r['ms_per_step']:>9.1f}")
    write_json(args.json or out / "nve.json", report)
    return 0


def _num(x: float | None, fmt: str) -> str:
    """``x`` formatted for a results table, ``-`` when there is no value."""
    return "-" if x is None else format(x, fmt)


def _all_exist(name: str, paths: list[str]) -> bool:
    """Whether every path exists; prints ``dequiformer bench NAME: error: not found: ...`` if not."""
    import sys
    from pathlib import Path

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"dequiformer bench {name}: error: not found: {', '.join(missing)}", file=sys.stderr)
    return not missing


def _run_accuracy(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..bench.accuracy import DEFAULT_CONFIGS, plot_learning_curves, run_accuracy_benchmark
    from ..demo import ASSETS
    from ..rundir import write_json

    configs = args.configs or list(DEFAULT_CONFIGS)
    if not _all_exist("accuracy", configs + [args.data]):
        return 2
    heldout = args.heldout or str(ASSETS / "aspirin_heldout.npz")
    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.seconds is not None:
        # every model's cosine ends at the budget (train.epochs is then only an upper bound)
        overrides += [f"train.max_seconds={args.seconds}", "train.lr_schedule=seconds", "train.epochs=100000"]
    try:
        report = run_accuracy_benchmark(configs, args.data, heldout, args.out, overrides, args.parallel, args.threads,
                                        device=args.device, eval_max_iter=args.eval_max_iter)
    except (RuntimeError, ValueError) as exc:
        print(f"dequiformer bench accuracy: error: {exc}", file=sys.stderr)
        return 2
    report["plot"] = str(plot_learning_curves(report, Path(args.out) / "learning_curves.png"))
    print(f"{'model':<16}{'params':>10}{'min':>7}{'epochs':>7}{'E MAE':>9}{'F MAE':>9}{'peak MB':>9}"
          f"{'+MB':>7}{'ms/step':>9}{'fwd':>6}{'bwd':>6}   ({report['rows'][0]['units']['energy']})")
    for r in report["rows"]:
        print(f"{r['model']:<16}{r['params']:>10d}{r['seconds'] / 60:>7.1f}{r['epochs']:>7d}{r['energy_mae']:>9.3f}"
              f"{r['forces_mae']:>9.3f}{r['train_peak_rss_mb']:>9.0f}{r['train_rss_growth_mb']:>7.0f}"
              f"{_num(r['train_ms_per_step'], '.0f'):>9}{_num(r['fwd_steps'], '.1f'):>6}{_num(r['bwd_steps'], '.1f'):>6}")
        if r["eval_unconverged"]:
            print(f"  {r['model']}: {r['eval_unconverged']} held-out solves unconverged at --eval-max-iter "
                  f"{args.eval_max_iter}: its errors are those of unconverged fixed points", file=sys.stderr)
    write_json(args.json or Path(args.out) / "accuracy.json", report)
    return 0


def _run_train_cost(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from ..bench.accuracy import DEFAULT_CONFIGS
    from ..bench.train_cost import plot_train_cost, run_train_cost_benchmark
    from ..demo import ASSETS
    from ..rundir import write_json

    configs = args.configs or list(DEFAULT_CONFIGS)
    data = args.data or str(ASSETS / "aspirin_heldout.npz")
    if not _all_exist("train", configs + [data]):
        return 2
    try:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}")
        report = run_train_cost_benchmark(configs, data, args.out, args.overrides, args.steps, args.threads,
                                          args.device, reference=args.reference)
    except (RuntimeError, ValueError, KeyError) as exc:
        print(f"dequiformer bench train: error: {exc}", file=sys.stderr)
        return 2
    report["plot"] = str(plot_train_cost(report, Path(args.out) / "train.png"))
    ref = report["reference"]
    print(f"{'model':<16}{'params':>10}{'ms/step':>9}{'+RSS MB':>9}{'alloc MB':>10}"
          f"{'ms x':>7}{'RSS x':>7}{'alloc x':>8}   (x: / {ref})")
    for r in report["rows"]:
        print(f"{r['model']:<16}{r['params']:>10d}{r['ms_per_step']:>9.0f}{_num(r['rss_growth_mb'], '.0f'):>9}"
              f"{_num(r['peak_alloc_mb'], '.0f'):>10}{_num(r[f'ms_per_step_vs_{ref}'], '.2f'):>7}"
              f"{_num(r[f'rss_growth_mb_vs_{ref}'], '.2f'):>7}{_num(r[f'peak_alloc_mb_vs_{ref}'], '.2f'):>8}")
        for kind, ms in r["ms_per_step_by_kind"].items():
            print(f"    {kind:<40}{ms:>8.0f} ms{_num(r['peak_alloc_mb_by_kind'].get(kind), '.0f'):>8} MB allocated")
    write_json(args.json or Path(args.out) / "train.json", report)
    return 0


def _run_solver(args: argparse.Namespace) -> int:
    import sys

    from ..bench.solver import BENCH_MODEL, bench_batch, run_solver_benchmark
    from ..device import resolve_device
    from ..models import build_model
    from ..rundir import write_json

    try:
        device = resolve_device(args.device, what="--device")
    except ValueError as exc:
        print(f"dequiformer bench solver: error: {exc}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    dtype = getattr(torch, args.dtype)
    if args.checkpoint:
        from ..train.checkpoint import load_model

        model = load_model(args.checkpoint).to(dtype)
        if not model.is_implicit:
            raise SystemExit(f"{args.checkpoint}: not a DEQuiformer checkpoint (model.name must be 'dequiformer')")
    else:
        model = build_model(BENCH_MODEL, {}).to(dtype)
    graph = bench_batch(model.cutoff, model.max_neighbors, dtype, args.molecules).to(device=device)
    report = run_solver_benchmark(model.to(device), graph, args.tol, args.max_iter, args.repeats)
    report.update(model=args.checkpoint or "random-init BENCH_MODEL", device=str(device))
    print(f"{'solver':<20}{'f_evals_mean':>14}{'batch_f_evals':>15}{'seconds':>10}{'residual_max':>14}{'converged':>11}")
    for c in report["cases"]:
        print(f"{c['solver']:<20}{c['f_evals_mean']:>14.2f}{c['batch_f_evals']:>15d}{c['seconds']:>10.3f}"
              f"{c['residual_max']:>14.2e}{c['converged']:>8d}/{c['graphs']}")
    write_json(args.json, report)
    return 0
