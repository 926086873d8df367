"""-dE/dpos through the fixed point (``model(graph, grad_forces=True)``): values against finite
differences of the energy, and the training gradient of a loss on them (a second derivative
through the implicit layer) against finite differences in the parameters. float64, tight solves."""
import pytest
import torch

from dequiformer import build_model
from models_fixtures import TINY, ethanol, graph, rattled_crystal

DEQ = {"tol": 1e-11, "max_iter": 150, "b_tol": 1e-11, "b_max_iter": 150, "fp_correction": {"states": 0}}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**TINY, "name": name, "norm_placement": "pre", "num_layers": 1 if name == "dequiformer" else 2}
    return build_model(cfg, DEQ if name == "dequiformer" else None).double()


@pytest.mark.parametrize("name", ["dequiformer", "equiformer_v2"])
@pytest.mark.parametrize("make", [ethanol, rattled_crystal], ids=["molecule", "triclinic_cell"])
def test_grad_forces_equal_finite_differences_of_the_energy(name, make):
    model = _model(name).eval()
    atoms = make()
    atoms.rattle(0.05, seed=3)
    out = model(graph(atoms), grad_forces=True)
    forces = out["grad_forces"]
    if name == "dequiformer":
        assert bool(out["adjoint"].converged.all())
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (len(atoms) - 1, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            with torch.no_grad():
                energies.append(float(model(graph(moved))["energy"][0]))
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert forces[atom, axis].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_training_gradient_of_a_loss_on_grad_forces_is_exact():
    """Every kind of parameter: energy head, implicit layer, encoder embedding."""
    model = _model("dequiformer")
    atoms = ethanol()
    atoms.rattle(0.05, seed=3)
    weights = torch.randn(len(atoms), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss(train: bool) -> torch.Tensor:
        model.train(train)
        return (model(graph(atoms), grad_forces=True)["grad_forces"] * weights).sum()

    model.zero_grad()
    loss(True).backward()
    named = dict(model.named_parameters())
    for name in ("energy_head.ffn.linear_2.weight", "energy_head.ffn.gating_linear.weight",
                 "blocks.0.ffn.linear_2.weight", "encoder.sphere_embedding.weight"):
        p = named[name]
        idx = tuple(torch.nonzero(p.grad.abs() > 1e-8)[0].tolist())
        h = 1e-6
        with torch.no_grad():
            p[idx] += h
        up = loss(False).item()
        with torch.no_grad():
            p[idx] -= 2 * h
        down = loss(False).item()
        with torch.no_grad():
            p[idx] += h
        assert p.grad[idx].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-10), name


def test_grad_forces_need_grad_mode():
    model = _model("equiformer_v2").eval()
    with torch.no_grad(), pytest.raises(RuntimeError, match="grad mode"):
        model(graph(ethanol()), grad_forces=True)
