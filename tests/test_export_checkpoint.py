"""Inference-only checkpoints (what the demo ships)."""
import torch
from ase.build import molecule

from dequiformer.data.graph import AtomicGraph
from dequiformer.train.checkpoint import export_checkpoint, load_checkpoint, load_model
from test_md import write_tiny_checkpoint


def test_exported_checkpoint_gives_identical_outputs_without_optimizer_state(tmp_path):
    src = write_tiny_checkpoint(tmp_path / "full.pt")
    dst = export_checkpoint(src, tmp_path / "slim.pt")
    state = load_checkpoint(dst)
    assert "optimizer" not in state and "rng" not in state
    a, b = load_model(src), load_model(dst)
    g = AtomicGraph.from_atoms(molecule("H2O"), cutoff=a.cutoff)
    with torch.no_grad():
        assert torch.equal(a(g)["forces"], b(g)["forces"])
