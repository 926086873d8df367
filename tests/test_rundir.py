"""The one run-directory I/O module: atomic writes, checkpoint kinds, weights-only loading."""
import json

import pytest
import torch

from dequiformer.rundir import CheckpointError, atomic_output, load_checkpoint, save_checkpoint, write_json


class Payload:
    pass


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_checkpoint_kinds_are_checked_and_pickles_refused(tmp_path):
    path = save_checkpoint({"config": {}, "model": {}}, tmp_path / "c.pt", kind="classifier")
    assert load_checkpoint(path, kind="classifier")["kind"] == "classifier"
    assert load_checkpoint(path, kind=None)["kind"] == "classifier"
    with pytest.raises(CheckpointError, match="a classifier checkpoint, but a force_field checkpoint is needed"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="kind must be one of"):
        save_checkpoint({"config": {}, "model": {}}, tmp_path / "x.pt", kind="other")

    # an arbitrary object: loading it would run pickled code
    torch.save({"format": "dequiformer-checkpoint", "config": {}, "model": {}, "x": Payload()}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="pickled objects"):
        load_checkpoint(tmp_path / "p.pt")
