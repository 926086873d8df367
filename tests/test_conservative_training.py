"""Training conservative models end to end: fine-tuning a direct checkpoint (train.init_from),
stress labels from extxyz (REF_stress / REF_virial) and ASE db, the stress loss, eval's stress
MAE, and clear errors for settings that contradict each other."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from dequiformer.cli import main as cli
from dequiformer.data.readers import read_dataset
from dequiformer.train.checkpoint import load_model
from test_train import tiny_config, write_config, write_ethanol_npz

cli.COMMANDS.setdefault("train", ("dequiformer.cli.train", "train a force field"))
cli.COMMANDS.setdefault("eval", ("dequiformer.cli.eval", "evaluate a checkpoint"))


def emt_copper(n: int = 12, seed: int = 0) -> list:
    """Strained, rattled fcc Cu cells labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        atoms.calc = None
        atoms.info["REF_energy"] = energy
        atoms.info["REF_stress"] = stress.reshape(9)
        atoms.arrays["REF_forces"] = forces
        frames.append(atoms)
    return frames


def test_stress_labels_from_extxyz_and_ase_db(tmp_path):
    frames = emt_copper(3)
    write(tmp_path / "stress.xyz", frames, format="extxyz")
    virial = [a.copy() for a in frames]
    for a in virial:
        a.info["REF_virial"] = -np.asarray(a.info.pop("REF_stress")) * a.get_volume()
    write(tmp_path / "virial.xyz", virial, format="extxyz")
    expected = [np.asarray(a.info["REF_stress"]).reshape(3, 3) for a in frames]
    for name in ("stress.xyz", "virial.xyz"):
        data = read_dataset(tmp_path / name)
        for frame, ref in zip(data, expected):
            assert np.allclose(frame.stress, ref, atol=1e-10), name
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.db import connect

    with connect(tmp_path / "cu.db") as db:
        for a, ref in zip(frames, expected):
            b = a.copy()
            b.calc = SinglePointCalculator(b, energy=a.info["REF_energy"], forces=a.arrays["REF_forces"],
                                           stress=ref)
            db.write(b)
    for frame, ref in zip(read_dataset(tmp_path / "cu.db"), expected):
        assert np.allclose(frame.stress, ref, atol=1e-10)
    bad = frames[0].copy()
    bad.info["REF_stress"] = np.ones(4)
    write(tmp_path / "bad.xyz", [bad], format="extxyz")
    with pytest.raises(ValueError, match=r"bad.xyz: frame 0: key 'REF_stress'"):
        read_dataset(tmp_path / "bad.xyz")


def test_conservative_model_trains_on_stress_and_eval_reports_it(tmp_path):
    write(tmp_path / "cu.xyz", emt_copper(12), format="extxyz")
    cfg = tiny_config(tmp_path / "cu.xyz", epochs=2, stress_weight=10.0, energy_weight=1.0)
    cfg["model"].update(name="equiformer_v2", num_layers=2, forces="conservative", max_num_elements=30)
    cfg["data"].update(n_train=8, n_val=4, n_test=0)
    config = write_config(cfg, tmp_path / "cu.yaml")
    assert cli.main(["train", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert cli.main(["eval", str(tmp_path / "run" / "best.pt"), "--data", str(tmp_path / "cu.xyz"), "--split", "all",
                     "--json", str(tmp_path / "eval.json")]) == 0
    record = json.loads((tmp_path / "eval.json").read_text())
    assert record["stress_mae"] > 0 and record["units"]["stress"] == "eV/Angstrom^3"
    model = load_model(tmp_path / "run" / "best.pt")
    assert model.conservative


def test_fine_tune_a_direct_checkpoint_conservatively(tmp_path):
    data = write_ethanol_npz(tmp_path / "ethanol.npz")
    direct = write_config(tiny_config(data, epochs=1), tmp_path / "direct.yaml")
    assert cli.main(["train", str(direct), "--run-dir", str(tmp_path / "direct")]) == 0
    source = load_model(tmp_path / "direct" / "best.pt")
    assert cli.main(["train", str(direct), "--run-dir", str(tmp_path / "cons"), "--set", "model.forces=conservative",
                     "train.epochs=1", "train.lr=1e-9", "train.warmup_lr=1e-9", "train.min_lr=1e-9",
                     f"train.init_from={tmp_path / 'direct' / 'best.pt'}"]) == 0
    tuned = load_model(tmp_path / "cons" / "best.pt")
    assert tuned.conservative and not source.conservative
    # at a vanishing learning rate the run starts (and stays) at the direct model's weights
    for (name, a), b in zip(source.state_dict().items(), tuned.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-5), name
    # a conservative model's forces are -dE/dpos
    from dequiformer.data.graph import AtomicGraph
    from ase.build import molecule

    g = AtomicGraph.from_atoms(molecule("CH3CH2OH"), cutoff=tuned.cutoff)
    out = tuned(g, grad_forces=True)
    assert torch.allclose(out["forces"], out["grad_forces"])


def test_contradicting_settings_are_clear_errors(tmp_path, capsys):
    data = write_ethanol_npz(tmp_path / "ethanol.npz", n=16)
    cfg = tiny_config(data, grad_force_weight=5.0)
    cfg["model"]["forces"] = "conservative"
    assert cli.main(["train", str(write_config(cfg, tmp_path / "a.yaml")), "--run-dir", str(tmp_path / "a")]) == 2
    assert "grad_force_weight" in capsys.readouterr().err
    other = tiny_config(data, init_from=str(tmp_path / "missing.pt"))
    assert cli.main(["train", str(write_config(other, tmp_path / "b.yaml")), "--run-dir", str(tmp_path / "b")]) == 2
    assert "missing.pt" in capsys.readouterr().err
