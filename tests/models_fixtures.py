"""Tiny model configs and structures shared by the model tests."""
from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, molecule

from dequiformer.data.graph import AtomicGraph

CUTOFF = 4.0

TINY = dict(
    num_layers=2, lmax=2, mmax=1, sphere_channels=8, attn_hidden_channels=8, num_heads=2, attn_alpha_channels=4,
    attn_value_channels=4, ffn_hidden_channels=8, edge_channels=8, num_radial_basis=8, cutoff=CUTOFF,
    max_neighbors=None, max_num_elements=20, avg_num_nodes=5.0, avg_degree=5.0, alpha_drop=0.0, path_drop=0.0,
    grid_resolution=20,
)


def graph(atoms, dtype=torch.float64, **kw) -> AtomicGraph:
    return AtomicGraph.from_atoms(atoms, cutoff=CUTOFF, dtype=dtype, **kw)


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def rattled_crystal(seed: int = 0) -> Atoms:
    """Two-atom triclinic-ish periodic cell, rattled so forces are nonzero."""
    atoms = bulk("NaCl", "rocksalt", a=4.6)
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.1, 0.0], [0.05, 0.0, 0.0], [0.0, 0.0, 0.2]]), scale_atoms=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def rotation(seed: int) -> np.ndarray:
    from e3nn import o3

    torch.manual_seed(seed)
    return o3.rand_matrix(dtype=torch.float64).numpy()
