"""``dequiformer refit-references CHECKPOINT --data TRAIN --out NEW.pt [--split train|all]``.

Re-fits the model's per-element energy references on labelled frames (by default the run's
training split) with the inference solver, and writes a copy of the checkpoint with them: see
:mod:`dequiformer.train.refit`. Forces are unchanged.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .main import run_reporting_input_errors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="best.pt / last.pt / an exported checkpoint")
    parser.add_argument("--data", required=True, help="the labelled frames (normally the training data)")
    parser.add_argument("--format", default=None, help="reader format (default: detected from the file)")
    parser.add_argument("--split", choices=("train", "all"), default="train",
                        help="the run's training split (splits.npz beside the checkpoint; default) or every frame")
    parser.add_argument("--out", required=True, help="where to write the re-fitted checkpoint (atomically)")
    parser.add_argument("--max-iter", type=int, default=None,
                        help="DEQ: solver iteration cap per solve (default: the checkpoint's deq.max_iter)")
    parser.add_argument("--batch-size", type=int, default=4, help="structures per forward (default 4)")
    parser.add_argument("--json", metavar="OUT", help="write the fit's summary as JSON here")


def run(args: argparse.Namespace) -> int:
    return run_reporting_input_errors("refit-references", _run, args)


def _train_indices(checkpoint: Path, n_frames: int, data_path: str) -> list[int]:
    from ..data.splits import SPLITS_FILE, Splits
    from .eval import split_indices

    path = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / SPLITS_FILE
    if not path.exists():
        raise ValueError(f"--split train: no {path} beside the checkpoint; pass --split all to fit on every frame")
    return split_indices(path, Splits.load(path), "train", n_frames, data_path)


def _run(args: argparse.Namespace) -> int:
    from ..data.readers import read_dataset
    from ..rundir import write_json
    from ..train.checkpoint import build_from_checkpoint, cap_solver, load_checkpoint, save_checkpoint
    from ..train.refit import refit_energy_references
    from .eval import labelled_graphs

    checkpoint = Path(args.checkpoint)
    state = load_checkpoint(checkpoint)
    if args.max_iter is not None:
        cap_solver(state, args.max_iter, where=str(checkpoint))
    model = build_from_checkpoint(state, where=str(checkpoint))
    dataset = read_dataset(args.data, args.format)
    if args.split == "train":
        dataset = dataset.subset(_train_indices(checkpoint, len(dataset), args.data))
    graphs = labelled_graphs(dataset, model, str(args.data), name="refit")
    summary = refit_energy_references(model, graphs, args.batch_size)
    refs = model.scaling.energy_reference.detach().clone()
    state["model"]["scaling.energy_reference"] = refs
    norm = state.get("normalization")
    if norm and norm.get("elements"):
        # the fitted statistics travel with the weights (resume, init_from, model.normalization)
        norm["references"] = [float(refs[int(z)]) for z in norm["elements"]]
    state["refit_references"] = {"data": str(args.data), "split": args.split, **summary}
    save_checkpoint(state, args.out)
    summary.update(checkpoint=str(checkpoint), out=str(args.out), units=model.units["energy"])
    write_json(args.json, summary)
    print(f"{summary['n_structures']} structures: energy MAE {summary['energy_mae_before']:.4g} -> "
          f"{summary['energy_mae_after']:.4g} {summary['units']} (mean error before {summary['mean_error_before']:+.4g}); "
          f"wrote {args.out}")
    return 0
