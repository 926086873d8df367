"""`dequiformer demo` on the bundled checkpoints and frames (shortened)."""
import json

import pytest

from dequiformer.cli.main import main
from dequiformer.demo import ASSETS, asset_paths


def test_demo_runs_on_bundled_assets(tmp_path):
    out = tmp_path / "demo.json"
    assert main(["demo", "--md-steps", "4", "--eval-frames", "8", "--markov-frames", "3", "--threads", "1",
                 "--quiet", "--out", str(tmp_path / "demo_out"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for mode in ("explicit", "deq_cold", "deq_reuse", "explicit_conservative", "deq_conservative_reuse"):
        row = report[mode]
        assert set(row) >= {"forces_mae", "energy_mae", "units", "mean_solver_steps", "ms_per_step",
                            "energy_drift_ev_per_atom_per_ps", "forces"}
        assert row["forces_mae"] > 0 and row["ms_per_step"] > 0
        assert row["forces"] == ("conservative" if "conservative" in mode else "direct")
    assert report["deq_conservative_reuse"]["mean_adjoint_steps"] > 0
    assert report["md"]["ensemble"] == "nve"
    assert report["explicit"]["mean_solver_steps"] == 8
    assert report["deq_reuse"]["mean_solver_steps"] <= report["deq_cold"]["mean_solver_steps"]
    assert report["speedup_vs_explicit"] > 0
    assert (tmp_path / "demo_out" / "report.md").is_file() and (tmp_path / "demo_out" / "solver_steps.png").is_file()


def test_missing_assets_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="deq.pt"):
        asset_paths(tmp_path)
    assert ASSETS.name == "demo"
