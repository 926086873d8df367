"""`dequiformer refit-references`: per-element energy references re-fitted on training frames."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dequiformer.cli.main import main as cli
from dequiformer.data.readers import read_dataset
from dequiformer.train.checkpoint import export_checkpoint, load_checkpoint, load_model
from dequiformer.train.dataset import GraphDataset
from dequiformer.train.refit import refit_energy_references
from dequiformer.train.trainer import Trainer

from test_train import tiny_config, write_ethanol_npz


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    data = write_ethanol_npz(root / "ethanol.npz", n=16)
    Trainer(tiny_config(data, epochs=1, max_steps_per_epoch=1), root / "run").fit()
    return {"data": data, "ckpt": root / "run" / "best.pt", "root": root}


def test_refit_removes_a_per_atom_offset_and_leaves_forces(run):
    model = load_model(run["ckpt"])
    frames = list(read_dataset(str(run["data"])))
    graphs = GraphDataset(frames, model.cutoff, model.max_neighbors, torch.float32)
    with torch.no_grad():
        before = model(graphs.batch(range(len(frames))))
    # labels = the model's own energies + 0.3 per atom: exactly what a constant offset looks like
    shifted = [dataclasses.replace(f, energy=float(e) + 0.3 * len(f.numbers))
               for f, e in zip(frames, before["energy"].tolist())]
    summary = refit_energy_references(model, GraphDataset(shifted, model.cutoff, model.max_neighbors, torch.float32))
    assert summary["energy_mae_before"] == pytest.approx(0.3 * 9, rel=1e-6)
    assert summary["energy_mae_after"] < 1e-6 and summary["mean_error_before"] == pytest.approx(-2.7, rel=1e-6)
    with torch.no_grad():
        after = model(graphs.batch(range(len(frames))))
    assert torch.allclose(after["energy"], before["energy"] + 2.7, atol=1e-6)
    assert torch.equal(after["forces"], before["forces"])


def test_refit_cli_writes_a_checkpoint_that_fits_the_training_split(run, tmp_path, capsys):
    out, report = tmp_path / "refit.pt", tmp_path / "refit.json"
    assert cli(["refit-references", str(run["ckpt"]), "--data", str(run["data"]), "--out", str(out),
                "--json", str(report)]) == 0
    summary = json.loads(report.read_text())
    assert summary["n_structures"] == 12 and summary["energy_mae_after"] <= summary["energy_mae_before"]
    refit = load_model(out)
    moved = refit.scaling.energy_reference - load_model(run["ckpt"]).scaling.energy_reference
    assert sum(moved[int(z)] * n for z, n in ((1, 6), (6, 2), (8, 1))) == pytest.approx(-summary["mean_error_before"])
    # the checkpoint's normalisation metadata and an exported copy carry the new references
    assert refit.normalization["references"] == pytest.approx(
        [float(refit.scaling.energy_reference[int(z)]) for z in refit.normalization["elements"]])
    exported = export_checkpoint(out, tmp_path / "slim.pt")
    assert load_checkpoint(exported)["refit_references"]["n_structures"] == 12
    # no splits.npz beside an exported checkpoint: the error says what to do
    lone = tmp_path / "lone" / "x.pt"
    lone.parent.mkdir()
    lone.write_bytes(out.read_bytes())
    assert cli(["refit-references", str(lone), "--data", str(run["data"]), "--out", str(tmp_path / "y.pt")]) == 2
    assert "--split all" in capsys.readouterr().err
    assert cli(["refit-references", str(lone), "--data", str(run["data"]), "--split", "all",
                "--out", str(tmp_path / "y.pt")]) == 0
