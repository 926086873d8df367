"""SO(3) machinery: coefficient layout, edge frames and Wigner-D blocks, S2 grids, SO(3) linear maps.

Features are real spherical-harmonic coefficients in e3nn's basis, stored as
``[N, (lmax+1)**2, C]`` in l-major order (index ``l*l + l + m``, m = -l..l).
"""
from .layout import CoefficientLayout
from .wigner import cartesian_l1_index, edge_frames, wigner_blocks
from .rotation import EdgeRotation
from .grid import S2Grid
from .linear import SO3LinearV2

__all__ = [
    "CoefficientLayout",
    "EdgeRotation",
    "S2Grid",
    "SO3LinearV2",
    "cartesian_l1_index",
    "edge_frames",
    "wigner_blocks",
]
