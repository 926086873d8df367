"""Coefficient layout for (lmax, mmax): l-major <-> m-major order and m-truncation rescale."""
from __future__ import annotations

import math

import torch


class CoefficientLayout:
    """Index bookkeeping for spherical-harmonic coefficients up to ``lmax``, keeping ``|m| <= mmax``.

    * l-major (e3nn) order of the full set: index ``l*l + l + m``.
    * The *reduced* set keeps coefficients with ``|m| <= mmax``.
    * m-major order of the reduced set (used in the edge frame by the SO(2) convolution):
      all ``m = 0`` coefficients for ``l = 0..lmax``; then for each ``m = 1..mmax`` the
      ``+m`` coefficients for ``l = m..lmax`` followed by the ``-m`` ones.

    Attributes (LongTensors unless noted):
        l_of: [K] degree of each l-major coefficient, K = (lmax+1)**2.
        m_major_index: [R] l-major index of each m-major reduced coefficient.
        m_sizes: list, number of degrees that carry order m (``lmax - m + 1``).
        rescale: [R] float, ``sqrt((2l+1)/(2 mmax+1))`` for degrees l > mmax, else 1; applied
            when rotating truncated edge features back, to compensate for the dropped orders.
    """

    def __init__(self, lmax: int, mmax: int | None = None) -> None:
        mmax = lmax if mmax is None else mmax
        if lmax < 0 or mmax < 0 or mmax > lmax:
            raise ValueError(f"need 0 <= mmax <= lmax, got lmax={lmax}, mmax={mmax}")
        self.lmax, self.mmax = lmax, mmax
        self.num_coefficients = (lmax + 1) ** 2
        self.l_of = torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)], dtype=torch.long)

        order: list[int] = [self.index(l, 0) for l in range(lmax + 1)]
        self.m_sizes = [lmax + 1]
        for m in range(1, mmax + 1):
            order += [self.index(l, m) for l in range(m, lmax + 1)]
            order += [self.index(l, -m) for l in range(m, lmax + 1)]
            self.m_sizes.append(lmax - m + 1)
        self.m_major_index = torch.tensor(order, dtype=torch.long)
        self.num_reduced = len(order)
        self.rescale = torch.tensor(
            [self.truncation_rescale(int(self.l_of[i])) for i in order], dtype=torch.float64
        )

    @staticmethod
    def index(l: int, m: int) -> int:
        return l * l + l + m

    def truncation_rescale(self, l: int) -> float:
        return math.sqrt((2 * l + 1) / (2 * self.mmax + 1)) if l > self.mmax else 1.0

    def __repr__(self) -> str:
        return f"CoefficientLayout(lmax={self.lmax}, mmax={self.mmax})"
