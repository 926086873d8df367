"""MD driven by DEQCalculator: ``dequiformer md`` JSON, reuse vs cold, md_runs scripts, clear errors."""
from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read, write

from dequiformer.cli import main as climain
from dequiformer.models import build_model
from dequiformer.train.checkpoint import save_checkpoint
from models_fixtures import TINY

climain.COMMANDS.setdefault("md", ("dequiformer.cli.md", "molecular dynamics with the ASE calculator"))

ROOT = Path(__file__).resolve().parents[1]
MD_FIELDS = ("steps", "ensemble", "fp_reuse", "mean_solver_steps", "first_step_solver_steps", "ms_per_step",
             "energy_drift_ev_per_atom_per_ps", "mean_temperature_k", "unconverged_steps")
LOG_COLUMNS = ["step", "time_fs", "T_K", "E_pot_eV", "E_tot_eV", "volume_A3", "solver_steps", "adjoint_steps", "residual",
               "reused", "ms"]


def write_tiny_checkpoint(path: Path, explicit: bool = False, seed: int = 0, forces: str = "direct") -> Path:
    """A tiny random DEQuiformer (quickly converging: pre-norm, damped residual branches) or a
    2-block EquiformerV2, saved in the trainer's checkpoint layout (eV, Angstrom)."""
    cfg = {**TINY, "max_num_elements": 90, "forces": forces}
    cfg = {**cfg, "num_layers": 2} if explicit else {**cfg, "name": "dequiformer", "num_layers": 1,
                                                        "norm_placement": "pre"}
    deq = {"max_iter": 60}
    torch.manual_seed(seed)
    model = build_model(cfg, deq)
    with torch.no_grad():
        for block in getattr(model, "blocks", []):
            block.attention.proj.weight.mul_(0.3)
            block.ffn.linear_2.weight.mul_(0.3)
    state = {"config": {"model": cfg, "deq": deq, "data": {}, "train": {"dtype": "float32"}},
             "model": model.state_dict(), "units": {"energy": "eV", "length": "Angstrom"},
             "elements": [1, 6, 8], "dtype": "float32"}
    return save_checkpoint(state, path)




@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    atoms = molecule("CH3OH")
    write(root / "methanol.xyz", atoms, format="extxyz")
    return {"root": root, "deq": write_tiny_checkpoint(root / "deq.pt"),
            "explicit": write_tiny_checkpoint(root / "ev2.pt", explicit=True), "xyz": root / "methanol.xyz"}


def run_md_cli(files, out: Path, *extra: str) -> dict:
    code = climain.main(["md", str(files["deq"]), "--structure", str(files["xyz"]), "--steps", "4", "--dt", "0.5",
                         "--temperature", "300", "--seed", "1", "--dtype", "float64", "--quiet", "--json", str(out),
                         *extra])
    assert code == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("ensemble", ["nve", "langevin"])
def test_md_json_reuse_vs_cold(files, ensemble):
    root = files["root"]
    reuse = run_md_cli(files, root / f"{ensemble}_reuse.json", "--ensemble", ensemble,
                       "--traj", str(root / f"{ensemble}.traj"), "--log", str(root / f"{ensemble}.csv"))
    cold = run_md_cli(files, root / f"{ensemble}_cold.json", "--ensemble", ensemble, "--no-reuse")
    for out in (reuse, cold):
        for key in MD_FIELDS:
            assert key in out, key
        assert out["steps"] == 4 and out["ensemble"] == ensemble
        assert out["unconverged_steps"] == 0
        assert out["ms_per_step"] > 0 and out["mean_temperature_k"] > 0
    assert reuse["fp_reuse"] is True and cold["fp_reuse"] is False
    assert reuse["first_step_solver_steps"] == cold["first_step_solver_steps"]  # both start cold
    assert reuse["mean_solver_steps"] < cold["mean_solver_steps"]
    if ensemble == "nve":
        assert np.isfinite(reuse["energy_drift_ev_per_atom_per_ps"])
    else:
        assert reuse["energy_drift_ev_per_atom_per_ps"] is None
    frames = read(root / f"{ensemble}.traj", index=":")
    assert len(frames) == 5 and frames[-1].get_forces().shape == (6, 3)
    with open(root / f"{ensemble}.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == LOG_COLUMNS and len(rows) == 5
    assert rows[0]["reused"] == "0" and rows[1]["reused"] == "1"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"md_runs_{name}", ROOT / "md_runs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_md_runs_scripts_end_to_end(files, tmp_path):
    run_md = _load_script("run_md")
    code = run_md.main([str(files["explicit"]), "--structure", str(files["xyz"]), "--steps", "3", "--quiet",
                        "--traj", str(tmp_path / "md.traj"), "--log", str(tmp_path / "md.csv"),
                        "--json", str(tmp_path / "md.json")])
    assert code == 0
    out = json.loads((tmp_path / "md.json").read_text())
    assert out["fp_reuse"] is False and out["mean_solver_steps"] == 2  # explicit: 2 blocks per call
    assert len(read(tmp_path / "md.traj", index=":")) == 4

    relax = _load_script("relax")
    for optimizer in ("bfgs", "lbfgs", "fire"):
        traj, log, js = tmp_path / f"{optimizer}.traj", tmp_path / f"{optimizer}.csv", tmp_path / f"{optimizer}.json"
        code = relax.main([str(files["deq"]), "--structure", str(files["xyz"]), "--optimizer", optimizer,
                           "--steps", "3", "--fmax", "1e-6", "--quiet", "--traj", str(traj), "--log", str(log),
                           "--json", str(js)])
        assert code == 0
        summary = json.loads(js.read_text())
        assert summary["steps"] == 3 and summary["optimizer"] == optimizer and summary["fp_reuse"] is True
        assert summary["mean_solver_steps"] < summary["first_step_solver_steps"]
        assert len(read(traj, index=":")) == 4
        with open(log) as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 4 and "fmax_eV_per_A" in rows[0] and "solver_steps" in rows[0]


def test_md_clear_errors(files, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(SystemExit, match="nope.pt"):
        climain.main(["md", str(missing), "--structure", str(files["xyz"]), "--steps", "1", "--quiet"])
    with pytest.raises(SystemExit, match=r"frame index 7 out of range.*1 frame"):
        climain.main(["md", str(files["deq"]), "--structure", str(files["xyz"]), "--frame", "7", "--steps", "1",
                      "--quiet"])
    with pytest.raises(SystemExit, match="not found"):
        climain.main(["md", str(files["deq"]), "--structure", str(tmp_path / "missing.xyz"), "--quiet"])


def test_npt_md_and_cell_relaxation_from_the_command_line(tmp_path):
    from ase.build import bulk

    crystal = bulk("NaCl", "rocksalt", a=4.6).repeat((1, 1, 2))
    crystal.rattle(0.05, seed=0)
    write(tmp_path / "nacl.xyz", crystal, format="extxyz")
    cons = write_tiny_checkpoint(tmp_path / "cons.pt", forces="conservative")
    direct = write_tiny_checkpoint(tmp_path / "direct.pt")
    out = tmp_path / "npt.json"
    assert climain.main(["md", str(cons), "--structure", str(tmp_path / "nacl.xyz"), "--steps", "3", "--ensemble",
                         "npt", "--taup", "20", "--pressure", "1000", "--dtype", "float64", "--quiet",
                         "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["ensemble"] == "npt" and summary["pressure_bar"] == 1000
    assert summary["final_volume_a3"] != pytest.approx(crystal.get_volume(), rel=1e-9)
    assert summary["mean_adjoint_steps"] > 0 and summary["energy_drift_ev_per_atom_per_ps"] is None
    with pytest.raises(SystemExit, match="needs the stress"):
        climain.main(["md", str(direct), "--structure", str(tmp_path / "nacl.xyz"), "--steps", "1", "--ensemble",
                      "npt", "--quiet"])
    relax = _load_script("relax")
    js = tmp_path / "relax.json"
    assert relax.main([str(cons), "--structure", str(tmp_path / "nacl.xyz"), "--relax-cell", "--optimizer", "fire",
                       "--fmax", "1e-5", "--steps", "5", "--quiet", "--traj", str(tmp_path / "r.traj"),
                       "--log", str(tmp_path / "r.csv"), "--dtype", "float64", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["final_volume_a3"] != pytest.approx(crystal.get_volume(), rel=1e-9)


def test_relax_script_runs_out_of_the_box_on_the_bundled_slab_model(tmp_path):
    relax = _load_script("relax")
    out = tmp_path / "r.json"
    assert relax.main(["--steps", "3", "--traj", str(tmp_path / "r.traj"), "--log", str(tmp_path / "r.csv"),
                       "--quiet", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["checkpoint"].endswith("slab_deq.pt") and summary["structure"].endswith("slab_heldout.lmdb")
    assert summary["steps"] <= 3 and summary["fp_reuse"] is True
