"""Conservative forces and stress (``model.forces: conservative``, ``model(graph, stress=True)``):
values against finite differences of the energy, symmetry, the adjoint's warm start, and the
training gradient of a loss on -dE/dpos (a second derivative through the implicit layer) against
finite differences in the parameters and against unrolled autograd. float64, tight solves."""
import numpy as np
import pytest
import torch

from dequiformer import build_model
from dequiformer.models.derivatives import displace
from models_fixtures import TINY, ethanol, graph, rattled_crystal, rotation

DEQ = {"tol": 1e-11, "max_iter": 150, "b_tol": 1e-11, "b_max_iter": 150, "fp_correction": {"states": 0}}
NAMES = ["dequiformer", "equiformer_v2"]


def _model(name: str, forces: str = "conservative") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = {**TINY, "name": name, "norm_placement": "pre", "num_layers": 1 if name == "dequiformer" else 2,
           "forces": forces}
    return build_model(cfg, DEQ if name == "dequiformer" else None).double()


def _energy(model, atoms) -> float:
    with torch.no_grad():
        return float(model(graph(atoms))["energy"][0])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("make", [ethanol, rattled_crystal], ids=["molecule", "triclinic_cell"])
def test_conservative_forces_equal_finite_differences_of_the_energy(name, make):
    model = _model(name).eval()
    atoms = make()
    atoms.rattle(0.05, seed=3)
    with torch.no_grad():  # derivatives are taken all the same, and come back detached
        out = model(graph(atoms))
    forces = out["forces"]
    assert not forces.requires_grad
    if name == "dequiformer":
        assert bool(out["adjoint"].converged.all()) and out["solver"].adjoint is out["adjoint"]
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (len(atoms) - 1, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            energies.append(_energy(model, moved))
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert forces[atom, axis].item() == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_stress_equals_the_finite_difference_strain_derivative(name):
    model = _model(name).eval()
    atoms = rattled_crystal()
    stress = model(graph(atoms), stress=True)["stress"][0]
    assert torch.allclose(stress, stress.T, atol=1e-12)
    volume = atoms.get_volume()
    h = 1e-5
    for i, j in [(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2)]:
        sym = np.zeros((3, 3))
        sym[i, j] += 0.5
        sym[j, i] += 0.5
        energies = []
        for sign in (1, -1):
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * h * sym), scale_atoms=True)
            energies.append(_energy(model, strained))
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[i, j].item() == pytest.approx(fd, rel=1e-6, abs=1e-9), (i, j)


@pytest.mark.parametrize("name", NAMES)
def test_forces_rotate_as_vectors_and_stress_as_a_rank_two_tensor(name):
    model = _model(name).eval()
    atoms = rattled_crystal(seed=1)
    rot = rotation(5)
    turned = atoms.copy()
    turned.set_cell(atoms.cell.array @ rot.T, scale_atoms=True)
    a, b = (model(graph(x), stress=True) for x in (atoms, turned))
    r = torch.as_tensor(rot)
    assert torch.allclose(b["energy"], a["energy"], atol=1e-9)
    assert torch.allclose(b["forces"], a["forces"] @ r.T, atol=1e-8)
    assert torch.allclose(b["stress"][0], r @ a["stress"][0] @ r.T, atol=1e-8)


def test_stress_of_a_molecule_is_a_clear_error():
    model = _model("equiformer_v2").eval()
    with pytest.raises(ValueError, match="structure 0: stress needs a cell periodic in all three"):
        model(graph(ethanol()), stress=True)


def test_direct_model_still_reports_its_head_forces_and_grad_forces_on_request():
    model = _model("equiformer_v2", forces="direct").eval()
    g = graph(ethanol())
    out = model(g, grad_forces=True)
    conservative = _model("equiformer_v2").eval()(g)  # same seed, same weights
    assert torch.allclose(out["grad_forces"], conservative["forces"], atol=1e-12)
    assert not torch.allclose(out["forces"], out["grad_forces"], atol=1e-3)
    assert not g.pos.requires_grad  # the caller's graph is left alone


def test_adjoint_warm_start_cuts_adjoint_steps():
    deq = {**DEQ, "b_tol": 1e-6, "tol": 1e-8}
    torch.manual_seed(0)
    model = build_model({**TINY, "name": "dequiformer", "num_layers": 1, "forces": "conservative"}, deq).double().eval()
    atoms = ethanol()
    first = model(graph(atoms))
    atoms.positions += 0.002 * np.random.default_rng(0).standard_normal(atoms.positions.shape)
    cold = model(graph(atoms))
    warm = model(graph(atoms), z0=first["fixed_point"], tol=1e-8, adjoint0=first["adjoint_vector"])
    assert warm["adjoint"].steps.max() < cold["adjoint"].steps.max()
    assert torch.allclose(warm["forces"], cold["forces"], atol=1e-4)


def test_training_gradient_of_a_conservative_force_loss_is_exact():
    """Every kind of parameter: energy head, implicit layer, encoder embedding."""
    model = _model("dequiformer")
    atoms = ethanol()
    atoms.rattle(0.05, seed=3)
    weights = torch.randn(len(atoms), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss(train: bool) -> torch.Tensor:
        model.train(train)
        return (model(graph(atoms))["forces"] * weights).sum()

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


def test_training_gradient_matches_unrolled_autograd():
    """The same loss differentiated through 120 plain, fully tracked iterations of the layer."""
    model = _model("dequiformer")
    atoms = rattled_crystal()
    weights = torch.randn(len(atoms), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model.train()
    model.zero_grad()
    out = model(graph(atoms), stress=True)
    ((out["forces"] * weights).sum() + out["stress"].sum()).backward()
    ift = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    disp = displace(graph(atoms), stress=True)
    ctx, x = model.prepare(disp.graph)
    z = torch.zeros_like(x)
    for _ in range(120):
        z_next = model.implicit_layer(z, x, ctx)
        step = (z_next - z).norm() / z_next.norm()
        z = z_next
    assert step < 1e-12  # the plain iteration has converged
    energy = model.decode_energy(z, ctx)
    gpos, gstrain = torch.autograd.grad(energy.sum(), disp.leaves(), create_graph=True)
    volume = torch.linalg.det(disp.graph.cell.detach()).abs()
    ((-gpos * weights).sum() + (gstrain / volume).sum()).backward()
    checked = 0
    for n, p in model.named_parameters():
        if p.grad is None or n.startswith("force_head"):
            continue
        assert torch.allclose(ift[n], p.grad, rtol=1e-6, atol=1e-9), n
        checked += 1
    assert checked > 10


def test_one_step_force_tangent_keeps_force_values_and_approximates_their_gradient():
    """``deq.force_tangent: one_step`` drops the tangent solve: same forces, a gradient that points
    the same way as the exact one on a contractive layer, but is not identical to it. ``none``
    also drops the Jacobian term ``J^T g``: same forces again; the energy head's parameters get
    exactly one_step's gradient (it reaches them through dE/dz* only), the layer's a different one
    that still points the same way."""
    atoms = ethanol()
    atoms.rattle(0.05, seed=3)
    weights = torch.randn(len(atoms), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    results = {}
    for mode in ("exact", "one_step", "none"):
        torch.manual_seed(0)
        cfg = {**TINY, "name": "dequiformer", "norm_placement": "pre", "num_layers": 1, "forces": "conservative"}
        model = build_model(cfg, {**DEQ, "force_tangent": mode}).double().train()
        out = model(graph(atoms))
        (out["forces"] * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None and not n.startswith("force_head")}
        results[mode] = (out["forces"].detach(), grads)
    flat = {mode: torch.cat([g.flatten() for g in grads.values()]) for mode, (_, grads) in results.items()}
    (f_exact, _), (f_one, _), (f_none, _) = results["exact"], results["one_step"], results["none"]
    assert torch.allclose(f_exact, f_one, atol=1e-10)
    assert torch.allclose(f_exact, f_none, atol=1e-10)
    g_exact, g_one, g_none = flat["exact"], flat["one_step"], flat["none"]
    cosine = float(g_exact @ g_one / (g_exact.norm() * g_one.norm()))
    assert cosine > 0.9
    assert not torch.allclose(g_exact, g_one, rtol=1e-4, atol=1e-8)
    head = [n for n in results["none"][1] if n.startswith("energy_head")]
    assert head
    for n in head:
        assert torch.allclose(results["none"][1][n], results["one_step"][1][n], rtol=1e-8, atol=1e-12), n
    assert float(g_none @ g_one / (g_none.norm() * g_one.norm())) > 0.9
    assert not torch.allclose(g_none, g_one, rtol=1e-4, atol=1e-8)
