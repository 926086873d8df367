"""SO(3) machinery: Wigner blocks, edge frames, layout, grids, SO3 linear."""
import pytest
import torch
from e3nn import o3

from dequiformer.so3 import CoefficientLayout, S2Grid, SO3LinearV2, edge_frames, wigner_blocks


def test_wigner_blocks_rotate_spherical_harmonics():
    torch.manual_seed(0)
    rot = o3.rand_matrix(6, dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64)
    y = o3.spherical_harmonics(list(range(5)), x, normalize=True)
    for e in range(rot.shape[0]):
        d = torch.block_diag(*[b[e] for b in wigner_blocks(rot, 4)])
        y_rot = o3.spherical_harmonics(list(range(5)), x @ rot[e].T, normalize=True)
        assert torch.allclose(y_rot, y @ d.T, atol=1e-12)


def test_edge_frames_map_edge_to_y_and_are_finite_with_gradients():
    vec = torch.tensor(
        [[0, 1.0, 0], [0, -2.0, 0], [0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [1e-9, 1.0, 0], [0.3, -0.2, 0.9]],
        dtype=torch.float64, requires_grad=True,
    )
    frames = edge_frames(vec)
    u = vec / vec.norm(dim=-1, keepdim=True)
    assert torch.allclose(frames @ u.unsqueeze(-1), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(7, 3).unsqueeze(-1), atol=1e-12)
    assert torch.allclose(torch.linalg.det(frames), torch.ones(7, dtype=torch.float64))
    blocks = wigner_blocks(frames, 3)
    sum(b.sum() for b in blocks).backward()
    assert torch.isfinite(vec.grad).all()


def test_edge_frames_are_accurate_in_float32_near_the_singular_direction():
    # an aspirin NVE run in float32 passed an edge within 1 + cos = 1.7e-6 of -y; there the old
    # Rodrigues formula (1 / (1 + cos) by cancellation) was percents off and the forces of a
    # conservative DEQ 1.4 eV/A off, so the energy jumped
    gaps = torch.tensor([1e-2, 1e-4, 1e-6, 1e-8, 1e-10], dtype=torch.float64)
    phi = torch.linspace(0.3, 2.8, len(gaps), dtype=torch.float64)
    sin = torch.sqrt(gaps * (2 - gaps))
    vec = torch.stack([sin * torch.cos(phi), -(1 - gaps), sin * torch.sin(phi)], dim=-1) * 1.7
    ref = edge_frames(vec)
    assert torch.allclose(ref @ (vec / vec.norm(dim=-1, keepdim=True)).unsqueeze(-1),
                          torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand(5, 3).unsqueeze(-1), atol=1e-12)
    assert torch.allclose(ref @ ref.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(5, 3, 3), atol=1e-12)
    vec32 = vec.float().requires_grad_(True)
    frames32 = edge_frames(vec32)
    assert (frames32.double() - ref).abs().max() < 1e-5
    frames32.sum().backward()
    assert torch.isfinite(vec32.grad).all()


def test_layout_m_major_order_and_rescale():
    layout = CoefficientLayout(3, 2)
    # m = 0 for l = 0..3, then +1 (l=1..3), -1 (l=1..3), +2 (l=2,3), -2 (l=2,3)
    expected = [0, 2, 6, 12, 3, 7, 13, 1, 5, 11, 8, 14, 4, 10]
    assert layout.m_major_index.tolist() == expected
    assert layout.m_sizes == [4, 3, 2]
    l3 = [i for i, k in enumerate(expected) if k >= 9]
    assert torch.allclose(layout.rescale[l3], torch.full((len(l3),), (7 / 5) ** 0.5, dtype=torch.float64))
    assert torch.all(layout.rescale[[i for i, k in enumerate(expected) if k < 9]] == 1)


def test_grid_round_trip_is_identity_for_band_limited_functions():
    grid = S2Grid(3, 3, 14)
    c = torch.randn(2, 16, 5, dtype=torch.float64)
    # e3nn builds its quadrature in single precision: the round trip is exact to ~3e-7
    assert torch.allclose(grid.from_grid(grid.to_grid(c)), c, atol=2e-6)


def test_so3_linear_is_equivariant_and_biases_only_l0():
    torch.manual_seed(0)
    lin = SO3LinearV2(4, 3, lmax=2).double()
    with torch.no_grad():
        lin.bias.fill_(0.5)
    x = torch.randn(5, 9, 4, dtype=torch.float64)
    rot = o3.rand_matrix(1, dtype=torch.float64)
    d = torch.block_diag(*[b[0] for b in wigner_blocks(rot, 2)])
    rotated_then = lin(torch.einsum("ij,njc->nic", d, x))
    then_rotated = torch.einsum("ij,njc->nic", d, lin(x))
    assert torch.allclose(rotated_then, then_rotated, atol=1e-12)
    assert torch.allclose(lin(torch.zeros_like(x))[:, 0], torch.full((5, 3), 0.5, dtype=torch.float64))
    assert torch.all(lin(torch.zeros_like(x))[:, 1:] == 0)


@pytest.mark.parametrize("order,lmax,mmax", [("l", 2, 2), ("m", 3, 2)])
def test_pointwise_on_the_grid_equals_the_two_projections_in_value_and_gradient(order, lmax, mmax):
    from dequiformer.so3.grid import S2Grid

    grid = S2Grid(lmax, mmax, order=order).double()
    k = (lmax + 1) ** 2 if order == "l" else grid.to_flat.shape[0]
    x = torch.randn(7, k, 5, dtype=torch.float64, requires_grad=True)
    ref = grid.from_grid(torch.nn.functional.silu(grid.to_grid(x)))
    out = grid.apply_pointwise(torch.nn.functional.silu, x, chunk=8)  # several chunks
    assert torch.allclose(out, ref, atol=1e-12)
    w = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), x)
    (g_out,) = torch.autograd.grad((out * w).sum(), x)
    assert torch.allclose(g_out, g_ref, atol=1e-12)
