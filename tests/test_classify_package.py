"""Structure of ``dequiformer.classify``: every module imports on its own, no import cycle among
its modules, no import of the CLI; classifier checkpoints load weights-only."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dequiformer" / "classify"
MODULES = sorted(f"dequiformer.classify.{p.stem}" for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module ``path`` imports, at top level or inside functions."""
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            # ``from . import x`` / ``from .pkg import mod`` may name modules
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name in MODULES:
        path = PACKAGE / f"{name.rsplit('.', 1)[1]}.py"
        graph[name] = {n for n in _imports(path, name) if n in MODULES and n != name}
    return graph


def test_every_module_imports_in_isolation() -> None:
    # one fresh interpreter: each module is imported with no other classify module loaded, so an
    # import that only works in some order (the symptom of a cycle) fails here
    script = (
        "import importlib, json, sys\n"
        f"failures = {{}}\n"
        f"for name in {MODULES!r}:\n"
        "    for key in [k for k in sys.modules if k == 'dequiformer.classify' or k.startswith('dequiformer.classify.')]:\n"
        "        del sys.modules[key]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failures[name] = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps(failures))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {}
    assert len(MODULES) >= 8  # config, splits, loop, images, structures, report, checkpoint, train, ...


def test_no_module_imports_the_cli() -> None:
    for name in MODULES:
        imported = _imports(PACKAGE / f"{name.rsplit('.', 1)[1]}.py", name)
        assert not [n for n in imported if n == "dequiformer.cli" or n.startswith("dequiformer.cli.")], name


def test_imaging_stays_below_classify() -> None:
    """structure -> graph -> image only: no imaging module reaches up into classifiers or the CLI."""
    for path in (ROOT / "dequiformer" / "imaging").glob("*.py"):
        imported = _imports(path, f"dequiformer.imaging.{path.stem}")
        assert not [n for n in imported if n.startswith(("dequiformer.classify", "dequiformer.cli"))], path.name


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join([*path, node, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])
    assert "dequiformer.classify.loop" in graph["dequiformer.classify.images"]  # the scan sees relative imports


def test_weights_only_safe_converts_or_names_the_key() -> None:
    from dequiformer.classify.checkpoint import weights_only_safe

    out = weights_only_safe({"a": np.arange(3), "b": np.float64(0.5), "c": [np.int64(2), (1, "x")], "d": Path("p")})
    assert torch.equal(out["a"], torch.arange(3)) and type(out["b"]) is float and out["b"] == 0.5
    assert out["c"] == [2, (1, "x")] and type(out["c"][0]) is int and out["d"] == "p"
    with pytest.raises(TypeError, match=r"history\['when'\]"):
        weights_only_safe({"when": object()}, "history")


def test_classifier_checkpoint_loads_weights_only(tmp_path: Path) -> None:
    from dequiformer.classify.train import train_classifier
    from dequiformer.imaging.image_dataset import ImageDataset
    from dequiformer.rundir import CheckpointError, load_checkpoint

    rng = np.random.default_rng(0)
    data = ImageDataset(rng.integers(0, 255, (12, 8, 8, 3)).astype(np.uint8), np.arange(12) % 2, ["a", "b"])
    cfg = {"model": {"channels": 4, "inner_channels": 4, "num_groups": 2, "pool_size": 4},
           "deq": {"max_iter": 3}, "data": {"path": str(data.save(tmp_path / "images.npz")), "test_fraction": 0.25},
           "train": {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "progress": False, "device": "cpu"}}
    train_classifier(cfg, tmp_path / "run", log=lambda _: None)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["kind"] == "classifier" and state["route"] == "image" and state["class_names"] == ["a", "b"]
    assert load_checkpoint(tmp_path / "run" / "best.pt", kind="classifier")["epoch"] == 1
    with pytest.raises(CheckpointError, match="classifier"):  # not mistaken for a force field
        load_checkpoint(tmp_path / "run" / "last.pt")
