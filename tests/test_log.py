"""Logging: epoch lines to stdout and to the run's train.log; other ranks only warn; a failed
train leaves no run directory behind."""
import logging

from dequiformer.cli.main import main
from dequiformer.log import RankFilter


def test_rank_filter_lets_only_warnings_through_on_other_ranks():
    info = logging.LogRecord("dequiformer.x", logging.INFO, __file__, 1, "epoch 1", None, None)
    warn = logging.LogRecord("dequiformer.x", logging.WARNING, __file__, 1, "diverged", None, None)
    assert RankFilter(0).filter(info) and RankFilter(0).filter(warn)
    assert not RankFilter(3).filter(info)
    assert RankFilter(3).filter(warn) and warn.msg == "[rank 3] diverged"


def test_failed_train_leaves_no_run_directory(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: dequiformer}\ndata: {path: %s}\n" % (tmp_path / "absent.npz"))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run)]) == 2
    assert "absent.npz" in capsys.readouterr().err
    assert not run.exists()


def test_plot_draws_learning_curves_of_runs(tmp_path, capsys):
    from dequiformer.train.metrics_log import write_metrics_csv

    for name, scale in (("a", 1.0), ("b", 2.0)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"epoch": e, "lr": 1e-3, "train_energy_mae": scale / e, "val_energy_mae": scale / e,
                 "train_forces_mae": 2 * scale / e, "val_forces_mae": 2 * scale / e, "train_solver_steps": 10.0,
                 "elapsed": 60.0 * e} for e in range(1, 4)]
        write_metrics_csv(run / "metrics.csv", rows)
        (run / "config.yaml").write_text("model: {energy_units: eV}\n")
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--x", "time"]) == 0
    assert (tmp_path / "a" / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["plot", str(tmp_path / "nothing")]) == 2
    assert "no metrics.csv" in capsys.readouterr().err
