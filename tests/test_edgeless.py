"""Structures without edges (one atom, atoms beyond the cutoff): an energy and zero forces.

Isolated-atom energies are how per-element references are taken, so both models must accept
them alone and inside a batch with ordinary structures.
"""
import pytest
import torch
from ase import Atoms

from dequiformer import build_model
from models_fixtures import CUTOFF, TINY, ethanol, graph

DEQ = {"tol": 1e-8, "max_iter": 80}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**TINY, "name": name, "num_layers": 1 if name == "dequiformer" else 2, "norm_placement": "pre"}
    return build_model(cfg, DEQ if name == "dequiformer" else None).double().eval()


@pytest.mark.parametrize("name", ["dequiformer", "equiformer_v2"])
@pytest.mark.parametrize("atoms", [
    Atoms("O", positions=[[0.0, 0.0, 0.0]]),
    Atoms("HO", positions=[[0.0, 0.0, 0.0], [0.0, 0.0, CUTOFF + 1.0]]),
], ids=["one_atom", "beyond_cutoff"])
def test_edgeless_structure_has_energy_and_zero_forces(name, atoms):
    model = _model(name)
    g = graph(atoms)
    assert g.edge_index.shape[1] == 0
    out = model(g)
    assert out["energy"].shape == (1,) and torch.isfinite(out["energy"]).all()
    assert torch.equal(out["forces"], torch.zeros_like(out["forces"]))
    if name == "dequiformer":
        assert bool(out["solver"].converged.all())


@pytest.mark.parametrize("name", ["dequiformer", "equiformer_v2"])
def test_isolated_atom_in_a_batch_matches_it_alone(name):
    model = _model(name)
    lone = Atoms("O", positions=[[0.0, 0.0, 0.0]])
    alone = model(graph(lone))["energy"]
    batched = model(graph([ethanol(), lone]))
    assert torch.allclose(batched["energy"][1], alone[0], rtol=0, atol=1e-7)
    assert torch.equal(batched["forces"][-1], torch.zeros(3, dtype=torch.float64))
