"""`dequiformer bench solver | accuracy | train | nve | md | profile | batched` end to end on tiny data."""
import json

import numpy as np
import pytest

from dequiformer.cli.main import main


def test_bench_solver_json_fields(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["bench", "solver", "--molecules", "3", "--max-iter", "4", "--repeats", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [c["solver"] for c in report["cases"]] == ["anderson", "forward", "torchdeq_anderson"]
    for case in report["cases"]:
        assert set(case) >= {"solver", "f_evals_mean", "seconds", "residual_max"}
        assert 1 <= case["f_evals_mean"] <= 4 and case["seconds"] > 0 and case["residual_max"] >= 0
    assert report["num_graphs"] == 3


def test_bench_accuracy_end_to_end_on_tiny_data(tmp_path):
    import yaml

    from test_train import tiny_config, write_ethanol_npz

    data = write_ethanol_npz(tmp_path / "train.npz", n=20)
    heldout = write_ethanol_npz(tmp_path / "heldout.npz", n=6, seed=5)
    deq = tiny_config(data, epochs=2, max_steps_per_epoch=2)
    explicit = tiny_config(data, epochs=2, max_steps_per_epoch=2)
    explicit["model"].update(name="equiformer_v2", num_layers=2)
    paths = []
    for name, cfg in (("tiny_deq", deq), ("tiny_explicit", explicit)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        paths.append(str(path))
    out = tmp_path / "acc.json"
    argv = ["bench", "accuracy", *paths, "--data", str(data), "--heldout", str(heldout), "--epochs", "2",
            "--out", str(tmp_path / "bench"), "--json", str(out), "--eval-max-iter", "3"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    fields = {"model", "params", "seconds", "epochs", "energy_mae", "forces_mae", "units", "train_peak_rss_mb",
              "train_ms_per_step", "fwd_steps", "bwd_steps"}
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"tiny_deq", "tiny_explicit"}
    for row in rows.values():
        assert fields <= set(row)
        assert row["epochs"] == 2 and row["params"] > 0 and row["energy_mae"] > 0 and row["forces_mae"] > 0
        assert row["train_peak_rss_mb"] > 0 and row["train_ms_per_step"] > 0 and row["units"]["energy"] == "kcal/mol"
        assert len(row["curve"]) == 2
    assert rows["tiny_explicit"]["fwd_steps"] == 2 and rows["tiny_explicit"]["bwd_steps"] is None
    assert rows["tiny_deq"]["bwd_steps"] > 0
    assert (tmp_path / "bench" / "learning_curves.png").stat().st_size > 0
    # the DEQ's held-out solves ran under --eval-max-iter (its config's deq.max_iter is 12); the
    # row counts the ones left unconverged
    solver = json.loads((tmp_path / "bench" / "tiny_deq.eval.json").read_text())["solver"]
    assert solver["max_steps"] <= 3 and rows["tiny_deq"]["eval_unconverged"] == solver["unconverged"]
    assert rows["tiny_explicit"]["eval_unconverged"] == 0
    explicit_ckpt = str(tmp_path / "bench" / "tiny_explicit" / "best.pt")
    assert main(["eval", explicit_ckpt, "--data", str(heldout), "--split", "all", "--max-iter", "5"]) == 2


def test_bench_accuracy_names_a_missing_config(tmp_path, capsys):
    assert main(["bench", "accuracy", str(tmp_path / "nope.yaml"), "--data", str(tmp_path / "x.npz")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_bench_train_end_to_end_on_tiny_data(tmp_path):
    """Per config: timed steps by kind, resident growth, allocated peak by kind, ratios to the
    reference; the explicit model computes -dE/dpos on every step, the DEQ (grad_force_every 2,
    penalty_every 2 here) on every second, so the DEQ has two kinds and the dearer one holds more."""
    import yaml

    from test_train import tiny_config, write_ethanol_npz

    data = write_ethanol_npz(tmp_path / "train.npz", n=24)
    deq = tiny_config(data, epochs=1)
    deq["data"].update(n_train=24, n_val=0)
    deq["train"].update(grad_force_weight=10.0, grad_force_every=2, batch_size=2)
    deq["deq"].update(radius_reg=1.0, penalty_every=2)
    explicit = {**deq, "model": {**deq["model"], "name": "equiformer_v2", "num_layers": 2},
                "train": {**deq["train"], "grad_force_every": 1}}
    explicit.pop("deq")
    paths = []
    for name, cfg in (("tiny_deq", deq), ("tiny_explicit", explicit)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
        paths.append(str(tmp_path / f"{name}.yaml"))
    out = tmp_path / "bench"
    assert main(["bench", "train", *paths, "--data", str(data), "--steps", "3", "--out", str(out)]) == 0
    report = json.loads((out / "train.json").read_text())
    rows = {r["model"]: r for r in report["rows"]}
    assert report["reference"] == "tiny_explicit" and set(rows) == {"tiny_deq", "tiny_explicit"}
    deq_row, ex_row = rows["tiny_deq"], rows["tiny_explicit"]
    assert deq_row["steps"] == 4 and ex_row["steps"] == 3  # whole cycles of step kinds
    assert len(deq_row["ms_per_step_by_kind"]) == 2 and len(ex_row["ms_per_step_by_kind"]) == 1
    for r in rows.values():
        assert r["ms_per_step"] > 0 and r["rss_growth_mb"] >= 0 and r["params"] > 0
        assert set(r["peak_alloc_mb_by_kind"]) == set(r["ms_per_step_by_kind"])
        assert r["peak_alloc_mb"] == max(r["peak_alloc_mb_by_kind"].values()) > 0
    plain, dear = sorted(deq_row["peak_alloc_mb_by_kind"], key=len)
    assert deq_row["peak_alloc_mb_by_kind"][dear] > deq_row["peak_alloc_mb_by_kind"][plain]
    assert ex_row["peak_alloc_mb_vs_tiny_explicit"] == 1.0
    assert deq_row["peak_alloc_mb_vs_tiny_explicit"] == deq_row["peak_alloc_mb"] / ex_row["peak_alloc_mb"]
    assert (out / "train.png").stat().st_size > 0


def test_bench_train_errors_name_the_problem(tmp_path, capsys):
    from test_train import tiny_config, write_ethanol_npz
    import yaml

    assert main(["bench", "train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    data = write_ethanol_npz(tmp_path / "train.npz", n=6)
    cfg = tiny_config(data, epochs=1)
    cfg["data"].update(n_train=6, n_val=0)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["bench", "train", str(tmp_path / "c.yaml"), "--data", str(data), "--steps", "50",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "c.yaml" in err and "training frames" in err


def test_bench_nve_end_to_end(tmp_path):
    """Every case runs from the same start; a conservative tiny model conserves energy far better
    than its direct head does (a random direct head is no gradient of anything)."""
    from ase.build import molecule
    from ase.io import write

    from test_md import write_tiny_checkpoint

    write(tmp_path / "methanol.xyz", molecule("CH3OH"), format="extxyz")
    deq = write_tiny_checkpoint(tmp_path / "deq.pt")
    explicit = write_tiny_checkpoint(tmp_path / "ev2.pt", explicit=True)
    out = tmp_path / "nve"
    assert main(["bench", "nve", "--checkpoint", f"tiny={deq}", str(explicit), "--structure",
                 str(tmp_path / "methanol.xyz"), "--steps", "30", "--dt", "0.25", "--reuse-tols", "0.1",
                 "--modes", "direct", "conservative", "--dtype", "float64", "--tol", "1e-8", "--adjoint-tol", "1e-8",
                 "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "nve.json").read_text())
    cases = [(r["model"], r["forces"], r["solve"]) for r in report["rows"]]
    assert cases == [("tiny", "direct", "cold"), ("tiny", "direct", "reuse"), ("tiny", "conservative", "cold"),
                     ("tiny", "conservative", "reuse"), ("ev2", "direct", "explicit"),
                     ("ev2", "conservative", "explicit")]
    rows = {c: r for c, r in zip(cases, report["rows"])}
    for r in report["rows"]:
        assert r["steps"] == 30 and r["ps"] == 0.0075 and r["ms_per_step"] > 0
    assert rows[("tiny", "conservative", "cold")]["mean_adjoint_steps"] > 0
    assert rows[("tiny", "direct", "cold")]["mean_adjoint_steps"] == 0
    for model, solve in (("tiny", "cold"), ("ev2", "explicit")):
        cons = abs(rows[(model, "conservative", solve)]["max_deviation_ev_per_atom"])
        direct = abs(rows[(model, "direct", solve)]["max_deviation_ev_per_atom"])
        assert cons < direct
    assert (out / "nve.png").stat().st_size > 0
    assert main(["bench", "nve", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2


def test_bench_md_end_to_end(tmp_path):
    from ase.build import molecule
    from ase.io import write

    from dequiformer.bench.md_speed import molecule_grid
    from test_md import write_tiny_checkpoint

    grid = molecule_grid(molecule("H2O"), 5, spacing=6.0, periodic=True)
    assert len(grid) == 15 and grid.pbc.all() and np.allclose(grid.cell.lengths(), 12.0)
    write(tmp_path / "water.xyz", molecule("H2O"), format="extxyz")
    deq = write_tiny_checkpoint(tmp_path / "deq.pt")
    explicit = write_tiny_checkpoint(tmp_path / "ev2.pt", explicit=True)
    out = tmp_path / "md"
    assert main(["bench", "md", "--checkpoint", f"deq={deq}", f"x={explicit}", "--structure", str(tmp_path / "water.xyz"),
                 "--copies", "1", "2", "--steps", "4", "3", "--dtype", "float64", "--no-isolate", "--quiet",
                 "--repeats", "2", "--out", str(out)]) == 0
    report = json.loads((out / "md.json").read_text())
    assert report["steps"] == [4, 3]  # one count per size
    for r in report["rows"]:  # two round-robin runs each, the row keeps one of them (the median's rank)
        assert len(r["ms_per_step_repeats"]) == 2 and r["ms_per_step"] == min(r["ms_per_step_repeats"])
    assert {(r["atoms"], r["model"]) for r in report["rows"]} == {
        (n, m) for n in (3, 6) for m in ("explicit", "deq_cold", "deq_reuse", "deq_predictor")}
    for r in report["rows"]:
        assert set(r) >= {"atoms", "model", "ms_per_step", "solver_steps", "peak_rss_mb"}
        assert r["ms_per_step"] > 0 and r["peak_rss_mb"] > 0
    by = {(r["atoms"], r["model"]): r for r in report["rows"]}
    assert by[(6, "deq_reuse")]["solver_steps"] < by[(6, "deq_cold")]["solver_steps"]
    assert [r["atoms"] for r in report["ratios"]] == [3, 6]
    assert (out / "md_speed.png").stat().st_size > 0
    # step counts that match neither one count nor one per size: a clear error, exit status 2
    assert main(["bench", "md", "--checkpoint", f"deq={deq}", "--structure", str(tmp_path / "water.xyz"),
                 "--copies", "1", "2", "3", "--steps", "4", "3", "--no-isolate", "--quiet", "--out", str(out)]) == 2


def test_bench_profile_splits_a_call_into_stages(tmp_path):
    """Every row has the stages; the explicit model spends its trunk in blocks, the DEQ also in
    its solver; the stages account for the profiled call."""
    from ase.build import molecule
    from ase.io import write

    from dequiformer.bench.profile import SHOWN
    from test_md import write_tiny_checkpoint

    write(tmp_path / "water.xyz", molecule("H2O"), format="extxyz")
    deq = write_tiny_checkpoint(tmp_path / "deq.pt")
    explicit = write_tiny_checkpoint(tmp_path / "ev2.pt", explicit=True)
    out = tmp_path / "profile"
    assert main(["bench", "profile", "--checkpoint", f"deq={deq}", f"x={explicit}", "--structure",
                 str(tmp_path / "water.xyz"), "--copies", "1", "2", "--calls", "2", "--warmup", "2", "--quiet",
                 "--out", str(out)]) == 0
    report = json.loads((out / "profile.json").read_text())
    assert [(r["atoms"], r["checkpoint"], r["kind"]) for r in report["rows"]] == [
        (3, "deq", "deq"), (3, "x", "explicit"), (6, "deq", "deq"), (6, "x", "explicit")]
    for r in report["rows"]:
        assert set(r["stages"]) == set(SHOWN) and all(v >= 0 for v in r["stages"].values())
        assert r["stages"]["blocks"] > 0 and r["stages"]["graph"] > 0 and r["ms_per_call"] > 0
        assert sum(r["stages"].values()) == pytest.approx(r["profiled_ms_per_call"], rel=0.05)
        assert r["top_ops"] and r["solver_steps"] >= 1
    assert (out / "profile.png").stat().st_size > 0
    assert main(["bench", "profile", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2


def test_bench_batched_end_to_end(tmp_path):
    pytest.importorskip("torch_sim")
    from ase.build import molecule
    from ase.io import write

    from test_md import write_tiny_checkpoint

    write(tmp_path / "water.xyz", molecule("H2O"), format="extxyz")
    deq = write_tiny_checkpoint(tmp_path / "deq.pt")
    out = tmp_path / "b"
    assert main(["bench", "batched", "--checkpoint", f"deq={deq}", "--structure", str(tmp_path / "water.xyz"),
                 "--systems", "1", "3", "--steps", "2", "--dtype", "float64", "--quiet", "--out", str(out)]) == 0
    report = json.loads((out / "batched.json").read_text())
    assert {(r["systems"], r["mode"]) for r in report["rows"]} == {
        (n, m) for n in (1, 3) for m in ("ase_one_by_one", "torchsim_batched")}
    for r in report["rows"]:
        assert r["structure_steps_per_s"] > 0 and r["solver_steps"] > 0 and r["atoms"] == 3
    assert [r["systems"] for r in report["ratios"]] == [1, 3]
    assert (out / "batched.png").stat().st_size > 0
