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


def test_relaxation_act_on_tiny_slab_models(tmp_path):
    from dequiformer.demo import relaxation_act, relaxation_table
    from test_md import write_tiny_checkpoint
    from test_relax_bench import emt_lmdb

    paths = {"slab_deq": write_tiny_checkpoint(tmp_path / "d.pt", forces="conservative"),
             "slab_explicit": write_tiny_checkpoint(tmp_path / "x.pt", explicit=True, forces="conservative"),
             "slab_frames": emt_lmdb(tmp_path / "slab.lmdb")}
    act = relaxation_act(paths, fmax=0.5, steps=5, system=0)
    assert act["system"] and act["atoms"] > 0 and act["emt_relaxed_energy_ev"] < act["emt_start_energy_ev"]
    for key in ("slab_explicit", "slab_deq_reuse"):
        row = act[key]
        assert row["seconds"] > 0 and 0 <= row["optimizer_steps"] <= 5 and row["mean_adjoint_steps"] >= 0
        assert row["converged"] == (row["final_fmax"] < 0.5)
    assert act["slab_deq_reuse"]["mean_adjoint_steps"] > 0  # a conservative DEQ solves its adjoint
    assert act["speedup_vs_explicit"] > 0
    assert relaxation_table(act).count("\n") == 3


def test_second_act_on_the_shipped_slab_models():
    """The demo's relaxation on the bundled models: both converge near EMT's relaxed energy, and
    the DEQ's warm-started solves take fewer layer evaluations than the explicit model's 8 blocks."""
    from dequiformer.demo import ASSETS, asset_paths, relaxation_act

    act = relaxation_act(asset_paths(ASSETS))
    assert act["system"] == "O/Pt(111)-hcp" and act["emt_start_energy_ev"] > act["emt_relaxed_energy_ev"] + 1.0
    for key in ("slab_explicit", "slab_deq_reuse"):
        row = act[key]
        assert row["converged"] and row["final_fmax"] < 0.05 and row["optimizer_steps"] > 5
        assert abs(row["final_energy_ev"] - act["emt_relaxed_energy_ev"]) < 0.5
    assert act["slab_deq_reuse"]["mean_solver_steps"] < act["slab_explicit"]["mean_solver_steps"] == 8
