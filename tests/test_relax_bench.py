"""``dequiformer relax-bench`` on two tiny EMT slab relaxations with a DEQ and an explicit checkpoint."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from dequiformer.cli import main as climain
from dequiformer.simulate.relax_bench import start_structures
from test_md import write_tiny_checkpoint

climain.COMMANDS.setdefault("relax-bench", ("dequiformer.cli.relax_bench", "relaxation benchmark"))

ROOT = Path(__file__).resolve().parents[1]
ROW_FIELDS = ("model", "mode", "seconds_mean", "seconds_std", "solver_steps_mean", "solver_steps_std",
              "final_fmax_mean", "energy_mae_ev", "forces_mae_ev_per_a", "optimizer_steps_mean", "converged_fraction",
              "final_energy_mae_ev", "unconverged_solves", "trace_first_system")


def emt_lmdb(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("generate_emt_relaxations",
                                                  ROOT / "datasets" / "generate_emt_relaxations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--systems", "2", "--steps", "3", "--metals", "Cu", "Al", "--size", "2", "2",
                        "--layers", "2", "--seed", "0", "--quiet", "--out", str(path)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("relax_bench")
    return {"root": root, "lmdb": emt_lmdb(root / "emt.lmdb"), "deq": write_tiny_checkpoint(root / "deq.pt"),
            "explicit": write_tiny_checkpoint(root / "ev2.pt", explicit=True)}


def test_start_structures_one_per_sid_with_fixed_atoms(files):
    starts = start_structures(files["lmdb"], 5, progress=False)
    assert len(starts) == 2  # two relaxations (sids), several frames each
    for s in starts:
        assert s.atoms.constraints and s.energy_ev is not None and s.forces_ev_per_a.shape == (len(s.atoms), 3)
        # the relaxed energy is the relaxation's last frame: below the start for EMT's BFGS
        assert s.relaxed_energy_ev is not None and s.relaxed_energy_ev < s.energy_ev
        assert s.name.endswith(("-ontop", "-bridge", "-fcc", "-hcp"))


def test_relax_bench_rows_and_report(files):
    root = files["root"]
    out, report = root / "bench.json", root / "report"
    code = climain.main(["relax-bench", str(files["deq"]), str(files["explicit"]), "--data", str(files["lmdb"]),
                         "--n-systems", "2", "--steps", "3", "--optimizer", "fire", "--fmax", "0.01", "--quiet",
                         "--json", str(out), "--report", str(report)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["n_systems"] == 2 and res["optimizer"] == "fire" and res["steps"] == 3 and res["fmax"] == 0.01
    rows = res["rows"]
    assert [r["mode"] for r in rows] == ["deq_cold", "deq_reuse", "deq_reuse_relaxed", "deq_predictor",
                                         "deq_force_scaled", "explicit"]
    for r in rows:
        for key in ROW_FIELDS:
            assert key in r and r[key] is not None, (r["mode"], key)
        assert r["seconds_mean"] > 0 and r["final_fmax_mean"] > 0
        assert r["energy_mae_ev"] >= 0 and r["forces_mae_ev_per_a"] >= 0
    cold, reuse, relaxed, predictor, scaled, explicit = rows
    assert scaled["force_scaled_tol"] == [res["tol"], res["reuse_tol"]] and reuse["force_scaled_tol"] is None
    assert explicit["solver_steps_mean"] == 2 and explicit["solver_steps_std"] == 0
    assert (reuse["predictor"], predictor["predictor"], cold["predictor"]) == (1, 3, None)
    for r in rows:  # converged counts agree with each system's final fmax
        assert r["converged_fraction"] == pytest.approx(sum(s["final_fmax"] < 0.01 for s in r["systems"]) / 2)
        assert [s["converged"] for s in r["systems"]] == [s["final_fmax"] < 0.01 for s in r["systems"]]
        assert r["unconverged_solves"] == 0
        trace = r["trace_first_system"]
        steps = r["systems"][0]["optimizer_steps"]
        assert len(trace["elapsed_s"]) == len(trace["fmax"]) == steps + 1 and trace["elapsed_s"] == sorted(trace["elapsed_s"])
        assert trace["fmax"][-1] == pytest.approx(r["systems"][0]["final_fmax"])
    assert relaxed["solver_steps_mean"] < cold["solver_steps_mean"]
    assert cold["energy_mae_ev"] == pytest.approx(relaxed["energy_mae_ev"], rel=1e-6)  # same cold start solve
    assert "eV" in res["units"]["energy_mae_ev"]
    table = (report / "relax_bench.md").read_text()
    assert table.count("| deq_") == 5 and "| explicit |" in table
    assert (report / "relax_bench.png").read_bytes()[:4] == b"\x89PNG"


def test_relax_bench_clear_errors(files, tmp_path):
    with pytest.raises(SystemExit, match="missing.pt"):
        climain.main(["relax-bench", str(files["deq"]), str(tmp_path / "missing.pt"), "--data", str(files["lmdb"]),
                      "--quiet"])
    with pytest.raises(SystemExit, match="nothing.lmdb"):
        climain.main(["relax-bench", str(files["deq"]), "--data", str(tmp_path / "nothing.lmdb"), "--quiet"])


def test_force_scaled_tolerance_follows_fmax_down_to_the_floor(files):
    # run_relaxation sets the calculator's warm-start tolerance from each step's fmax:
    # clip(floor * fmax_now / fmax, floor, cap); explicit calculators are left alone
    from dequiformer.calculator import DEQCalculator
    from dequiformer.simulate.relax import run_relaxation
    from dequiformer.train.checkpoint import load_model

    start = start_structures(files["lmdb"], 1, progress=False)[0]
    calc = DEQCalculator(load_model(files["deq"]), fp_reuse=True, tol=1e-4, reuse_tol=5e-2)
    seen = []
    original = calc.calculate

    def spy(*args, **kwargs):
        seen.append(calc.reuse_tol)
        return original(*args, **kwargs)

    calc.calculate = spy
    result = run_relaxation(start.atoms.copy(), calc, optimizer="fire", fmax=0.01, steps=4, force_scaled_tol=(1e-4, 1e-2))
    fmaxes = [r["fmax_eV_per_A"] for r in result.rows]
    expected = [min(1e-2, max(1e-4, 1e-4 * f / 0.01)) for f in fmaxes[:-1]]
    assert seen[0] == 5e-2 and seen[1:] == pytest.approx(expected)  # the cold call first, then one per step
    with pytest.raises(ValueError, match="floor <= cap"):
        run_relaxation(start.atoms.copy(), calc, fmax=0.01, steps=1, force_scaled_tol=(1e-2, 1e-4))
    with pytest.raises(ValueError, match="reuse_tol must be > 0"):
        calc.reuse_tol = 0.0
