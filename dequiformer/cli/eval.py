"""``dequiformer eval CHECKPOINT --data PATH [--format F] [--split test|all] --json OUT``.

Energy and force MAE of a trained model on a data set, in the model's training units, plus
solver statistics and model time per structure. ``--split test`` takes the test indices of the
``splits.npz`` beside the checkpoint (the run directory) when it is there and fits the data;
otherwise every frame is evaluated.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from .main import run_reporting_input_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="best.pt / last.pt written by dequiformer train (or a run directory)")
    parser.add_argument("--data", required=True, help="data file or folder (MD17/MD22 npz, OC20 LMDB, ASE db, extxyz)")
    parser.add_argument("--format", default=None, help="reader format (default: detected from the file)")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option (e.g. energy_key=REF_energy, forces_key=REF_forces, skip_bad=true); "
                             "default: the training run's data.options when --data has the training data's format")
    parser.add_argument("--allow-unseen-elements", action="store_true",
                        help="evaluate structures with elements the model never saw in training (a warning, "
                             "not an error; their predictions are untrained extrapolation)")
    parser.add_argument("--split", choices=("test", "all"), default="test",
                        help="evaluate the run's test split (default) or every frame")
    parser.add_argument("--json", metavar="OUT", help="write the results as a JSON object here")
    parser.add_argument("--batch-size", type=int, default=4, help="structures per forward (default 4)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K (default cpu)")
    parser.add_argument("--max-structures", type=int, default=None, help="evaluate at most this many (the first)")
    parser.add_argument("--raw-weights", action="store_true", help="use the raw weights, not the EMA weights")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="DEQ: solver iteration cap of each fixed-point (and adjoint) solve (default: the "
                             "checkpoint's deq.max_iter, which a training config may keep low for speed)")


def select_indices(checkpoint: Path, dataset: Any, split: str, data_path: str, cfg: dict) -> tuple[list[int] | None, str]:
    """Frame indices to evaluate (None: all) and a note saying which were chosen."""
    from ..data.splits import SPLITS_FILE, Splits

    if split == "all":
        return None, "all frames"
    run_dir = checkpoint if checkpoint.is_dir() else checkpoint.parent
    path = run_dir / SPLITS_FILE
    if not path.exists():
        warnings.warn(f"--split test: no {path}; evaluating every frame of {data_path}", stacklevel=2)
        return None, "all frames (no splits.npz)"
    splits = Splits.load(path)
    data_cfg = cfg.get("data") or {}
    if splits.meta.get("separate_files") or data_cfg.get("test_path"):
        test_path = data_cfg.get("test_path")
        if test_path and Path(test_path).resolve() == Path(data_path).resolve() and len(splits.test):
            return [int(i) for i in splits.test], f"test split of {path}"
        return None, "all frames (the run's test set is a separate file)"
    if len(splits.test) == 0:
        return None, "all frames (the run's split has no test part)"
    return split_indices(path, splits, "test", len(dataset), data_path), f"test split of {path}"


def split_indices(path: Path, splits: Any, part: str, n_frames: int, data_path: str) -> list[int]:
    """The ``part`` ("train", "val", "test") indices of a run's ``splits`` (read from ``path``),
    checked against the ``n_frames`` of ``data_path``: ValueError when the split was made for
    another data set or an index is out of range."""
    n = splits.meta.get("n")
    if n is not None and int(n) != n_frames:
        raise ValueError(f"{path} was made for {n} frames but {data_path} has {n_frames}; pass --split all "
                         f"or the data set the model was trained on")
    indices = getattr(splits, part)
    if len(indices) and int(indices.max()) >= n_frames:
        raise ValueError(f"{path}: {part} index {int(indices.max())} out of range for {n_frames} frames of "
                         f"{data_path}")
    return [int(i) for i in indices]


def reader_options(given: list[str], cfg: dict, data_path: str, fmt: str | None) -> dict[str, Any]:
    """``--option KEY=VALUE`` values (YAML-typed), or the run's ``data.options`` when none are given and
    the data has the training data's format."""
    import yaml

    from ..data.readers import detect_format

    if given:
        out = {}
        for item in given:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--option {item!r}: expected KEY=VALUE")
            out[key] = yaml.safe_load(value)
        return out
    data_cfg = cfg.get("data") or {}
    trained = data_cfg.get("options") or {}
    if not trained or not data_cfg.get("path"):
        return {}
    try:
        same = (fmt or detect_format(Path(data_path))) == (data_cfg.get("format") or detect_format(Path(data_cfg["path"])))
    except ValueError:
        return {}
    return dict(trained) if same else {}


def check_elements(dataset: Any, elements: list[int], allow: bool, data_path: str) -> None:
    """Refuse (or, with ``allow``, warn about) frames with elements the model never saw in training."""
    import numpy as np

    if not elements:
        return
    known = set(int(z) for z in elements)
    sources = getattr(dataset, "source_indices", None)  # a property of FrameDataset
    for i in range(len(dataset)):
        numbers = np.asarray(dataset[i].numbers)
        unseen = sorted(set(int(z) for z in np.unique(numbers)) - known)
        if unseen:
            atom = int(np.flatnonzero(np.isin(numbers, unseen))[0])
            message = (f"{data_path}: frame {i if sources is None else int(sources[i])} has "
                       f"element(s) Z={unseen} (first at atom {atom}) that the model never saw in training "
                       f"(trained on Z={sorted(known)})")
            if not allow:
                raise ValueError(message + "; pass --allow-unseen-elements to evaluate anyway")
            warnings.warn(message, stacklevel=2)
            return


def run(args: argparse.Namespace) -> int:
    """Evaluate; input errors are reported in one line with exit status 2."""
    return run_reporting_input_errors("eval", _run, args)


def _run(args: argparse.Namespace) -> int:
    from ..data.readers import read_dataset
    from ..device import resolve_device
    from ..train.checkpoint import build_from_checkpoint, cap_solver, load_checkpoint
    from ..train.evaluate import eval_record, evaluate
    from ..rundir import write_json

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    checkpoint = Path(args.checkpoint)
    state = load_checkpoint(checkpoint)
    if args.max_iter is not None:
        cap_solver(state, args.max_iter, where=str(checkpoint))
    device = resolve_device(args.device, what="--device")
    model = build_from_checkpoint(state, use_ema=not args.raw_weights, device=device, where=str(checkpoint))
    units = model.units
    options = reader_options(args.options, state["config"], args.data, args.format)
    dataset = read_dataset(args.data, args.format, **options)  # an unknown option is a ValueError too
    indices, note = select_indices(checkpoint, dataset, args.split, args.data, state["config"])
    if indices is not None:
        dataset = dataset.subset(indices)
    if args.max_structures is not None:
        dataset = dataset.subset(list(range(min(int(args.max_structures), len(dataset)))))
    if len(dataset) == 0:
        raise ValueError(f"{args.data}: nothing to evaluate (0 structures selected: {note})")
    check_elements(dataset, list(getattr(model, "elements", []) or []), args.allow_unseen_elements, args.data)
    graphs = labelled_graphs(dataset, model, str(args.data), name="eval")
    summary = evaluate(model, graphs, args.batch_size, device)
    record = eval_record(summary, units)
    record.update({"checkpoint": str(checkpoint), "data": str(args.data), "split": args.split, "selection": note,
                   "reader_options": options, "skipped_corrupt_entries": int(getattr(dataset, "skipped", 0) or 0)})
    if record["skipped_corrupt_entries"]:
        print(f"{args.data}: skipped {record['skipped_corrupt_entries']} corrupt entries (skip_bad)", file=sys.stderr)
    write_json(args.json, record)
    print(f"{record['n_structures']} structures ({note}): energy MAE {record['energy_mae']:.5g} {units['energy']}, "
          f"forces MAE {record['forces_mae']:.5g} {units['energy']}/{units['length']}, "
          f"solver steps {record['solver']['mean_steps']:.3g} (max {record['solver']['max_steps']}, "
          f"unconverged {record['solver']['unconverged']}), {record['seconds_per_structure'] * 1e3:.3g} ms/structure")
    return 0


def labelled_graphs(dataset: Any, model: Any, source: str, name: str) -> Any:
    """A :class:`GraphDataset` of ``dataset``'s frames for ``model``: labels converted to the
    model's energy unit, graphs in its dtype, built as needed (not cached), errors naming
    ``source``. ValueError when the data's lengths are not in Angstrom."""
    from ..data.units import energy_factor, length_factor
    from ..train.dataset import GraphDataset

    if float(length_factor(dataset.units.get("length", "Angstrom"), "Angstrom")) != 1.0:
        raise ValueError(f"{source}: lengths in {dataset.units['length']}; only Angstrom data is supported")
    frames: Any = dataset
    factor = energy_factor(dataset.units["energy"], model.units["energy"])
    if factor != 1.0:  # labels to the model's units
        frames = [_scaled(f, factor) for f in dataset]
    graphs = GraphDataset(frames, model.cutoff, model.max_neighbors, next(model.parameters()).dtype, cache=False,
                          name=name)
    graphs.source = source
    return graphs


def _scaled(frame: Any, factor: float) -> Any:
    import dataclasses

    return dataclasses.replace(
        frame, energy=None if frame.energy is None else frame.energy * factor,
        forces=None if frame.forces is None else frame.forces * factor,
        stress=None if getattr(frame, "stress", None) is None else frame.stress * factor,
    )


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m dequiformer.cli.eval``)."""
    parser = argparse.ArgumentParser(prog="dequiformer eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
