"""``dequiformer markov``: warm-started vs cold forces along a trajectory; refuses explicit models."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from dequiformer.cli import main as climain
from test_md import write_tiny_checkpoint

climain.COMMANDS.setdefault("markov", ("dequiformer.cli.markov", "warm-start vs cold forces (Markov check)"))

FIELDS = ("frames", "force_rel_diff_mean", "force_rel_diff_max", "energy_abs_diff_mean", "mean_steps_cold",
          "mean_steps_reuse", "start_error_mean", "fixed_point_motion_mean")


def write_walk_npz(path: Path, n: int = 6, seed: int = 0) -> Path:
    """MD17-layout npz: a random walk of ethanol (0.01 A steps per frame), placeholder labels (kcal/mol)."""
    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    steps = rng.normal(0.0, 0.01, (n, len(base), 3))
    steps[0] = 0.0
    R = base.positions[None] + np.cumsum(steps, axis=0)
    E = rng.normal(-97000.0, 1.0, (n, 1))
    F = rng.normal(0.0, 10.0, (n, len(base), 3))
    np.savez(path, R=R, z=base.numbers, E=E, F=F, name="ethanol")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("markov")
    return {"deq": write_tiny_checkpoint(root / "deq.pt"), "explicit": write_tiny_checkpoint(root / "ev2.pt", True),
            "npz": write_walk_npz(root / "walk.npz")}


def test_markov_json(files, tmp_path):
    out = tmp_path / "markov.json"
    code = climain.main(["markov", str(files["deq"]), "--data", str(files["npz"]), "--frames", "5", "--start", "1",
                         "--reuse-tol", "1e-2", "--dtype", "float64", "--quiet", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    for key in FIELDS:
        assert key in res, key
    assert res["frames"] == 5 and res["start"] == 1 and res["energy_units"] == "eV"
    assert len(res["force_rel_diff_per_frame"]) == 4  # the first frame of the walk is cold in both
    assert 0 <= res["force_rel_diff_mean"] <= res["force_rel_diff_max"] < 0.1
    assert res["energy_abs_diff_mean"] >= 0
    assert res["mean_steps_reuse"] < res["mean_steps_cold"]
    assert res["predictor"] == 1  # the calculator's default at reuse_tol 1e-2
    # plain reuse starts at the previous fixed point: its distance is the fixed point's move
    assert 0 < res["start_error_mean"] == pytest.approx(res["fixed_point_motion_mean"])
    out2 = tmp_path / "markov2.json"
    assert climain.main(["markov", str(files["deq"]), "--data", str(files["npz"]), "--frames", "5", "--reuse-tol",
                         "1e-2", "--predictor", "2", "--dtype", "float64", "--quiet", "--json", str(out2)]) == 0
    assert json.loads(out2.read_text())["predictor"] == 2


def test_markov_clear_errors(files, tmp_path):
    with pytest.raises(SystemExit, match="explicit EquiformerV2.*dequiformer"):
        climain.main(["markov", str(files["explicit"]), "--data", str(files["npz"]), "--frames", "2", "--quiet"])
    with pytest.raises(SystemExit, match=r"walk.npz: frame index 7 out of range"):
        climain.main(["markov", str(files["deq"]), "--data", str(files["npz"]), "--frames", "4", "--start", "4",
                      "--quiet"])
    with pytest.raises(SystemExit, match="missing.pt"):
        climain.main(["markov", str(tmp_path / "missing.pt"), "--data", str(files["npz"]), "--quiet"])
    with pytest.raises(SystemExit, match="at least 2 frames"):
        climain.main(["markov", str(files["deq"]), "--data", str(files["npz"]), "--frames", "1", "--quiet"])
