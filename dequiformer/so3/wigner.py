"""Edge frames and per-edge Wigner-D blocks.

The Wigner-D blocks are built directly from 3x3 rotation matrices by the Clebsch-Gordan
recursion ``D^l ∝ C^T (D^1 ⊗ D^{l-1}) C`` with e3nn's real Wigner 3j symbols as C. Unlike the
Euler-angle route (``xyz_to_angles`` + ``wigner_D``), this is a polynomial in the matrix entries:
finite and differentiable for every edge direction, including edges along +-y where the
Euler angles are singular.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from e3nn import o3


@lru_cache(maxsize=None)
def _l1_permutation() -> tuple[int, int, int]:
    """Cartesian axis of each e3nn l=1 coefficient (derived from e3nn, so version-proof)."""
    sh = o3.spherical_harmonics(1, torch.eye(3, dtype=torch.float64), normalize=True)
    # sh[a, i] is coefficient i of the unit vector along axis a
    return tuple(int(sh[:, i].abs().argmax()) for i in range(3))


def cartesian_l1_index() -> list[int]:
    """Indices into the 3 l=1 coefficients giving Cartesian (x, y, z) order."""
    perm = _l1_permutation()
    return [perm.index(axis) for axis in range(3)]


@lru_cache(maxsize=None)
def _cg_projector(l: int, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    c = o3.wigner_3j(1, l - 1, l, dtype=torch.float64)  # [3, 2l-1, 2l+1]
    q = c.reshape(3 * (2 * l - 1), 2 * l + 1)
    norm = float((q.T @ q)[0, 0])  # q^T q = norm * I for an intertwiner
    return c.to(dtype), norm


def wigner_blocks(rot: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Real Wigner-D matrices of ``rot`` in e3nn's basis, one per degree.

    Args:
        rot: [E, 3, 3] proper rotation matrices.
        lmax: highest degree.
    Returns:
        list of ``lmax+1`` tensors, block l of shape [E, 2l+1, 2l+1]; coefficients transform as
        ``c' = D c`` when a function is rotated by ``rot``.
    """
    perm = list(_l1_permutation())
    d1 = rot[:, perm][:, :, perm]
    blocks = [torch.ones(rot.shape[0], 1, 1, dtype=rot.dtype, device=rot.device)]
    if lmax >= 1:
        blocks.append(d1)
    for l in range(2, lmax + 1):
        c, norm = _cg_projector(l, rot.dtype)
        c = c.to(rot.device)
        t = torch.einsum("eac,ebd,cdn->eabn", d1, blocks[-1], c)
        blocks.append(torch.einsum("abm,eabn->emn", c, t) / norm)
    return blocks


def edge_frames(edge_vec: torch.Tensor) -> torch.Tensor:
    """Rotation taking each edge direction onto e3nn's polar axis (+y), continuous in the edge.

    Args:
        edge_vec: [E, 3] edge vectors (any length > 0), Angstrom.
    Returns:
        [E, 3, 3] rotation matrices R with ``R @ (edge_vec / |edge_vec|) = (0, 1, 0)``; row 1 is
        the edge direction. R is the smallest rotation doing so (about ``u x y``, Rodrigues),
        which fixes the roll about the edge as a continuous function of the direction everywhere
        except at ``u = -y`` itself (no frame field on the sphere is continuous everywhere),
        where a fixed half turn is used. The network's SO(2) operations make the result
        independent of the roll exactly with gate activations and up to the grid resolution with
        S2 activations; a roll that jumps (as a reference-axis switch does) would make the
        energy jump there too and NVE MD drift. No ``detach``: differentiable in positions.
    """
    u = edge_vec / edge_vec.norm(dim=-1, keepdim=True)
    ux, uy, uz = u.unbind(-1)
    zero = torch.zeros_like(ux)
    w = torch.stack([-uz, zero, ux], dim=-1)  # u x y: rotation axis times sin(angle)
    sin2 = ux * ux + uz * uz  # |w|^2
    c = uy  # cos(angle)
    # Rodrigues needs 1 / (1 + c). Near u = -y, 1 + c cancels: in float32 an edge within 1e-6
    # of -y got a frame wrong by percents, and a conservative model's forces by 1.4 eV/A (the
    # NVE energy jumped). For c < 0 the same number is (1 - c) / sin^2, made of the small
    # components themselves and accurate in any precision.
    ok = (c >= 0) | (sin2 > torch.finfo(u.dtype).eps ** 2)  # else: u = -y to working precision
    neg = c < 0
    safe_sin2 = torch.where(neg & ok, sin2, torch.ones_like(sin2))  # no inf in unused branches
    safe_c = torch.where(neg, torch.zeros_like(c), c)
    scale = torch.where(neg, (1.0 - c) / safe_sin2, 1.0 / (1.0 + safe_c))
    k = torch.zeros(u.shape[0], 3, 3, dtype=u.dtype, device=u.device)  # [w]x
    k[:, 0, 1], k[:, 0, 2] = -w[:, 2], w[:, 1]
    k[:, 1, 0], k[:, 1, 2] = w[:, 2], -w[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -w[:, 1], w[:, 0]
    eye = torch.eye(3, dtype=u.dtype, device=u.device).expand_as(k)
    rot = eye + k + torch.bmm(k, k) * scale.view(-1, 1, 1)
    half_turn = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=u.dtype, device=u.device)).expand_as(k)
    return torch.where(ok.view(-1, 1, 1), rot, half_turn)
