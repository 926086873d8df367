"""Checkpoints: load_model round trip, corrupt/missing files, atomic writes, ``dequiformer eval``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import dequiformer
from dequiformer.cli import main as cli
from dequiformer.data.readers import read_dataset
from dequiformer.train.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from dequiformer.train.dataset import GraphDataset
from dequiformer.train.trainer import Trainer
from test_train import tiny_config, write_ethanol_npz

cli.COMMANDS.setdefault("train", ("dequiformer.cli.train", "train a force field"))
cli.COMMANDS.setdefault("eval", ("dequiformer.cli.eval", "evaluate a checkpoint"))




@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch run with EMA: (trainer, run_dir, data path)."""
    root = tmp_path_factory.mktemp("ckpt")
    npz = write_ethanol_npz(root / "ethanol_emt.npz")
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(npz, epochs=2, ema_decay=0.5), root / "run")
    trainer.fit()
    return trainer, root / "run", npz


def _val_batch(trainer: Trainer):
    return trainer.val_graphs.batch(range(len(trainer.val_graphs)))


def test_load_model_round_trip(trained):
    trainer, run, _ = trained
    graph = _val_batch(trainer)
    model = dequiformer.load_model(run / "last.pt")
    assert not model.training
    assert model.units == {"energy": "kcal/mol", "length": "Angstrom"}
    assert model.elements == [1, 6, 8]
    assert next(model.parameters()).dtype == torch.float32
    with torch.no_grad():  # (with grad on, a DEQ returns f(z*) instead of z*: a tol-sized difference)
        out = model(graph)
    trainer.model.eval()
    with torch.no_grad(), trainer.ema.average_parameters(trainer.model):
        ref = trainer.model(graph)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=0)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=0)
    raw = load_model(run / "last.pt", use_ema=False)
    with torch.no_grad():
        ref_raw = trainer.model(graph)
        raw_out = raw(graph)
    torch.testing.assert_close(raw_out["forces"], ref_raw["forces"], rtol=0, atol=0)
    assert not torch.equal(raw_out["forces"], out["forces"])  # EMA weights differ from raw ones
    trainer.model.train()
    # normalisation is in the model: energies come back in the training units
    assert float(model.scaling.energy_scale) == pytest.approx(trainer.normalizer.scale)
    best = load_model(run / "best.pt")
    assert best.hparams["energy_units"] == "kcal/mol"
    state = load_checkpoint(run / "last.pt")
    for key in ("config", "model", "ema", "optimizer", "scheduler", "epoch", "rng", "normalization", "units",
                "elements", "metrics"):
        assert key in state, key
    assert state["epoch"] == 2 and state["config"]["train"]["epochs"] == 2


def test_missing_and_corrupt_checkpoints(trained, tmp_path):
    _, run, _ = trained
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(junk)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "last.pt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a dequiformer checkpoint"):
        load_model(foreign)
    state = load_checkpoint(run / "last.pt")
    del state["model"]
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "nomodel.pt")
    with pytest.raises(CheckpointError, match="'model'"):
        load_model(tmp_path / "nomodel.pt")


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint({"config": {"a": 1}, "model": {}}, tmp_path / "last.pt")
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"config": {"a": 2}, "model": {}}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["config"] == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_eval_json(trained, tmp_path, capsys):
    trainer, run, npz = trained
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(npz), "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    for key in ("n_structures", "energy_mae", "forces_mae", "units", "solver", "seconds_per_structure"):
        assert key in record, key
    assert record["n_structures"] == 24 - 12 - 4  # the run's test split
    assert record["units"]["energy"] == "kcal/mol" and record["units"]["length"] == "Angstrom"
    assert set(record["solver"]) >= {"mean_steps", "max_steps", "unconverged"}
    assert 1 <= record["solver"]["mean_steps"] <= record["solver"]["max_steps"] <= 12
    assert record["energy_mae"] > 0 and record["forces_mae"] > 0 and record["seconds_per_structure"] > 0
    # the same numbers by hand
    model = load_model(run / "best.pt")
    test = read_dataset(npz).subset(np.load(run / "splits.npz")["test"])
    graphs = GraphDataset(test, model.cutoff, model.max_neighbors, torch.float32)
    with torch.no_grad():
        o = model(graphs.batch(range(len(graphs))))
    batch = graphs.batch(range(len(graphs)))
    mae = (o["forces"] - batch.forces).abs().mean().item()
    assert record["forces_mae"] == pytest.approx(mae, rel=1e-5)

    all_out = tmp_path / "all.json"
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(npz), "--split", "all", "--json", str(all_out)]) == 0
    assert json.loads(all_out.read_text())["n_structures"] == 24
    capsys.readouterr()
    # a data set that does not match the run's splits.npz, and a missing data file
    other = write_ethanol_npz(tmp_path / "other.npz", n=10, seed=5)
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(other)]) == 2
    assert "--split all" in capsys.readouterr().err
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(tmp_path / "absent.npz")]) == 2
    assert "absent.npz" in capsys.readouterr().err
    # without splits.npz beside the checkpoint every frame is evaluated
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(run / "best.pt", lone / "best.pt")
    with pytest.warns(UserWarning, match="no .*splits.npz"):
        assert cli.main(["eval", str(lone / "best.pt"), "--data", str(npz), "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["n_structures"] == 24


def test_eval_reader_options_and_unseen_elements(trained, tmp_path, capsys):
    from ase.io import write

    _, run, npz = trained
    frames = read_dataset(npz)
    atoms_list = []
    for frame in list(frames)[:3]:
        atoms = frame.to_atoms()
        atoms.info["my_energy"] = float(frame.energy)
        atoms.arrays["my_forces"] = np.asarray(frame.forces)
        atoms.calc = None
        atoms_list.append(atoms)
    custom = tmp_path / "custom.xyz"
    write(custom, atoms_list, format="extxyz")
    out = tmp_path / "c.json"
    # custom keys: refused without the reader options, evaluated with them
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(custom), "--split", "all"]) == 2
    capsys.readouterr()
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(custom), "--split", "all", "--option",
                     "energy_key=my_energy", "--option", "forces_key=my_forces", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["n_structures"] == 3 and record["reader_options"] == {"energy_key": "my_energy",
                                                                       "forces_key": "my_forces"}
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(custom), "--option", "nonsense"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    # an element the model never saw: refused, naming the frame and the element, unless allowed
    odd = atoms_list[0].copy()
    odd.numbers[2] = 7  # nitrogen: within max_num_elements, never in the training data; keeps my_energy / my_forces
    write(tmp_path / "odd.xyz", [atoms_list[1], odd], format="extxyz")
    keys = ["--option", "energy_key=my_energy", "--option", "forces_key=my_forces"]
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(tmp_path / "odd.xyz"), "--split", "all", *keys]) == 2
    err = capsys.readouterr().err
    assert "frame 1" in err and "Z=[7]" in err and "atom 2" in err
    with pytest.warns(UserWarning, match="never saw"):
        assert cli.main(["eval", str(run / "best.pt"), "--data", str(tmp_path / "odd.xyz"), "--split", "all", *keys,
                         "--allow-unseen-elements"]) == 0


def test_eval_errors_name_the_frame_not_the_batch_position(trained, tmp_path, capsys):
    from ase.io import write

    _, run, npz = trained
    atoms_list = [f.to_atoms() for f in list(read_dataset(npz))[:7]]
    for a in atoms_list:
        a.info["my_energy"] = 0.0
        a.arrays["my_forces"] = np.zeros((len(a), 3))
        a.calc = None
    atoms_list[6].numbers[1] = 16  # beyond the model's max_num_elements: frame 6, batch position 2
    write(tmp_path / "bad.xyz", atoms_list, format="extxyz")
    assert cli.main(["eval", str(run / "best.pt"), "--data", str(tmp_path / "bad.xyz"), "--split", "all",
                     "--option", "energy_key=my_energy", "--option", "forces_key=my_forces",
                     "--allow-unseen-elements"]) == 2
    err = capsys.readouterr().err
    assert "bad.xyz: frame 6: atom 1 has atomic number 16" in err and "structure" not in err
