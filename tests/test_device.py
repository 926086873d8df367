"""Device selection: one resolver behind every ``--device`` and ``train.device``; a GPU that is not
there is one clear line from every command (no traceback, nothing started), and the benchmarks
run on a GPU where there is one."""
from __future__ import annotations

import json

import pytest
import torch

from dequiformer.cli.main import main
from dequiformer.demo import ASSETS
from dequiformer.device import resolve_device

NO_CUDA = not torch.cuda.is_available()
DEQ, HELDOUT = str(ASSETS / "deq.pt"), str(ASSETS / "aspirin_heldout.npz")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"--device: unknown device 'tpu' \(use auto, cpu, cuda, cuda:K or mps\)"):
        resolve_device("tpu", what="--device")


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_missing_gpu_is_one_clear_error():
    assert resolve_device("auto") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match=f"train.device is '{name}', but this machine has no usable CUDA device"):
            resolve_device(name, what="train.device")


COMMANDS = [
    ["bench", "md", "--copies", "1", "--steps", "1"],
    ["bench", "profile", "--copies", "1"],
    ["bench", "nve", "--steps", "2"],
    ["bench", "solver"],
    ["bench", "batched", "--systems", "1"],
    ["eval", DEQ, "--data", HELDOUT],
    ["markov", DEQ, "--data", HELDOUT],
    ["md", DEQ, "--structure", HELDOUT, "--steps", "2"],
]


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]) if a[0] == "bench" else a[0])
def test_every_command_says_the_gpu_is_missing_before_it_starts(argv, tmp_path, capsys):
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] == "bench" and argv[1] != "solver" else []
    try:
        code = main([*argv, *extra, "--device", "cuda"])
        message = capsys.readouterr().err
    except SystemExit as exc:  # md / markov / relax-bench: SystemExit("error: ...")
        code, message = 1, str(exc.code)
    assert code != 0
    assert "'cuda', but this machine has no usable CUDA device" in message and "--device" in message
    assert "Traceback" not in message and not out.exists()


@pytest.mark.skipif(not NO_CUDA, reason="this machine has a GPU")
def test_training_on_a_missing_gpu_names_train_device(tmp_path, capsys):
    code = main(["train", "configs/demo/deq.yaml", "--run-dir", str(tmp_path / "run"),
                 "--set", f"data.path={HELDOUT}", "train.device=cuda"])
    assert code == 2 and "train.device is 'cuda', but this machine has no usable CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_solver_bench_runs_on_the_gpu(tmp_path):
    report = tmp_path / "solver.json"
    assert main(["bench", "solver", "--device", "cuda", "--molecules", "4", "--repeats", "1",
                 "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    anderson = next(c for c in data["cases"] if c["solver"] == "anderson")
    assert data["device"].startswith("cuda") and anderson["converged"] == anderson["graphs"] == 4
