"""Rotation of edge features into and out of the per-edge frame (with m truncation)."""
from __future__ import annotations

import torch

from .layout import CoefficientLayout
from .wigner import edge_frames, wigner_blocks


class EdgeRotation:
    """Per-edge Wigner matrices, computed once per structure and reused by every block.

    ``rotate``: l-major node features gathered on edges [E, K, C] -> edge frame, m-major,
    truncated to |m| <= mmax [E, R, C]. ``rotate_inv``: back to l-major [E, K, C], with the
    m-truncation rescale of fairchem's EquiformerV2.
    """

    def __init__(self, edge_vec: torch.Tensor, layout: CoefficientLayout) -> None:
        self.layout = layout
        rot = edge_frames(edge_vec)
        blocks = wigner_blocks(rot, layout.lmax)
        k = layout.num_coefficients
        wigner = edge_vec.new_zeros((rot.shape[0], k, k))
        start = 0
        for b in blocks:
            n = b.shape[-1]
            wigner[:, start:start + n, start:start + n] = b
            start += n
        idx = layout.m_major_index.to(edge_vec.device)
        self.forward_matrix = wigner[:, idx, :]  # [E, R, K]
        rescale = layout.rescale.to(device=edge_vec.device, dtype=edge_vec.dtype)
        self.inverse_matrix = (self.forward_matrix * rescale[None, :, None]).transpose(1, 2)  # [E, K, R]

    def detached(self) -> "EdgeRotation":
        """The same rotations cut from the autograd graph of the positions they came from."""
        out = object.__new__(EdgeRotation)
        out.layout = self.layout
        out.forward_matrix = self.forward_matrix.detach()
        out.inverse_matrix = self.inverse_matrix.detach()
        return out

    def subset(self, edge_mask: torch.Tensor) -> "EdgeRotation":
        """The rotations of the edges selected by ``edge_mask`` [E] bool."""
        out = object.__new__(EdgeRotation)
        out.layout = self.layout
        out.forward_matrix = self.forward_matrix[edge_mask]
        out.inverse_matrix = self.inverse_matrix[edge_mask]
        return out

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.forward_matrix, x)

    def rotate_inv(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.inverse_matrix, x)
