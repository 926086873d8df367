"""Atom-bond graph with a distance cutoff and its canonical node-neighbour form.

The bond graph joins every pair of atoms closer than ``cutoff`` (Angstrom),
periodic images included when the structure has pbc (``ase.neighborlist`` with the
structure's own cell and pbc). Defaults: 2.0 A for molecules (no pbc), 3.4 A for
MOFs and crystals (any pbc).

The *node-neighbour representation* lists, for every atom, its element and its
neighbours' elements and distances. It is made independent of atom order,
orientation and translation as follows:

1. distances are quantised to ``resolution`` (default 0.001 A) so floating-point
   noise from a rotation cannot reorder anything;
2. each atom's neighbours are sorted by (quantised distance, Z);
3. atoms are sorted by (-Z, neighbour signature): heavier elements first (the
   skeleton before the hydrogens), ties broken by the lexicographic order of the
   sorted ``(distance, Z)`` list. Atoms whose keys tie have identical records,
   so their relative order cannot change any image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

MOLECULE_CUTOFF = 2.0
"""Default cutoff (Angstrom) for non-periodic structures (molecules)."""
PERIODIC_CUTOFF = 3.4
"""Default cutoff (Angstrom) for periodic structures (MOFs, crystals)."""
DEFAULT_RESOLUTION = 1e-3
"""Distance quantum (Angstrom) of the canonical representation."""


def default_cutoff(atoms: Atoms) -> float:
    """3.4 A when any lattice direction is periodic, else 2.0 A."""
    return PERIODIC_CUTOFF if bool(np.any(atoms.pbc)) else MOLECULE_CUTOFF


@dataclass(frozen=True)
class BondGraph:
    """Directed bond list (both directions stored).

    numbers: [N] atomic numbers; senders/receivers: [E] atom indices (edge i -> j means
    j is a neighbour of i); distances: [E] Angstrom; cutoff: Angstrom.
    """

    numbers: np.ndarray
    senders: np.ndarray
    receivers: np.ndarray
    distances: np.ndarray
    cutoff: float
    periodic: bool

    @property
    def num_atoms(self) -> int:
        return int(len(self.numbers))

    def degrees(self) -> np.ndarray:
        """Number of neighbours of each atom, [N] int."""
        return np.bincount(self.senders, minlength=self.num_atoms)


def build_bond_graph(atoms: Atoms, cutoff: float | None = None) -> BondGraph:
    """Bond graph of ``atoms`` with pair cutoff ``cutoff`` (Angstrom, default from :func:`default_cutoff`).

    Periodic directions need a non-degenerate cell; a periodic atom may be its own
    neighbour through a lattice translation (as in a one-atom crystal).
    """
    if len(atoms) == 0:
        raise ValueError("cannot build a bond graph of an empty structure")
    cutoff = default_cutoff(atoms) if cutoff is None else float(cutoff)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    periodic = bool(np.any(atoms.pbc))
    if periodic:
        lengths = np.linalg.norm(atoms.cell.array, axis=1)
        flat = [ax for ax in range(3) if atoms.pbc[ax] and lengths[ax] < 1e-9]
        if flat:
            raise ValueError(f"structure is periodic along axes {flat} but its cell vectors there are zero")
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    return BondGraph(
        numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(),
        senders=np.asarray(i, dtype=np.int64),
        receivers=np.asarray(j, dtype=np.int64),
        distances=np.asarray(d, dtype=np.float64),
        cutoff=cutoff,
        periodic=periodic,
    )


@dataclass(frozen=True)
class AtomRecord:
    """One atom of the node-neighbour representation.

    number: Z of the atom; neighbours: ``((distance_quanta, Z), ...)`` sorted by
    distance then Z, where distance = distance_quanta * resolution (Angstrom).
    """

    number: int
    neighbours: tuple[tuple[int, int], ...]

    def sort_key(self) -> tuple:
        return (-self.number, self.neighbours)


@dataclass(frozen=True)
class NodeNeighbourGraph:
    """Canonically ordered node-neighbour representation of one structure.

    records: one :class:`AtomRecord` per atom, canonical order; order: [N] indices of
    the original atoms in that order; cutoff and resolution in Angstrom.
    """

    records: tuple[AtomRecord, ...]
    order: np.ndarray
    cutoff: float
    resolution: float

    def __len__(self) -> int:
        return len(self.records)

    def max_degree(self) -> int:
        return max((len(r.neighbours) for r in self.records), default=0)

    def as_arrays(self, max_neighbours: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense arrays ``(Z [N], neighbour_Z [N, K], neighbour_distance [N, K])``.

        K = ``max_neighbours`` (default: the largest degree); neighbours beyond K
        (the farthest ones) are dropped; empty slots have Z = 0 and distance = nan (A).
        """
        k = self.max_degree() if max_neighbours is None else int(max_neighbours)
        n = len(self.records)
        z = np.array([r.number for r in self.records], dtype=np.int64)
        nz = np.zeros((n, k), dtype=np.int64)
        nd = np.full((n, k), np.nan)
        for row, rec in enumerate(self.records):
            for col, (q, zj) in enumerate(rec.neighbours[:k]):
                nz[row, col] = zj
                nd[row, col] = q * self.resolution
        return z, nz, nd


def node_neighbour_graph(
    structure: Atoms | BondGraph,
    cutoff: float | None = None,
    resolution: float = DEFAULT_RESOLUTION,
) -> NodeNeighbourGraph:
    """Canonical node-neighbour representation of ``structure`` (see the module docstring).

    ``structure`` is an ``ase.Atoms`` (its bond graph is built with ``cutoff``) or an
    already built :class:`BondGraph` (then ``cutoff`` must be None or equal).
    """
    if isinstance(structure, BondGraph):
        graph = structure
        if cutoff is not None and float(cutoff) != graph.cutoff:
            raise ValueError(f"cutoff {cutoff} differs from the bond graph's cutoff {graph.cutoff}")
    else:
        graph = build_bond_graph(structure, cutoff)
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    quanta = np.rint(graph.distances / resolution).astype(np.int64)
    neighbour_z = graph.numbers[graph.receivers]
    # Group edges by sender; within a sender sort by (distance quanta, Z).
    order = np.lexsort((neighbour_z, quanta, graph.senders))
    senders = graph.senders[order]
    bounds = np.searchsorted(senders, np.arange(graph.num_atoms + 1))
    q_sorted, z_sorted = quanta[order].tolist(), neighbour_z[order].tolist()
    records = []
    for atom in range(graph.num_atoms):
        lo, hi = bounds[atom], bounds[atom + 1]
        records.append(AtomRecord(int(graph.numbers[atom]), tuple(zip(q_sorted[lo:hi], z_sorted[lo:hi]))))
    atom_order = sorted(range(len(records)), key=lambda a: records[a].sort_key())
    return NodeNeighbourGraph(
        records=tuple(records[a] for a in atom_order),
        order=np.asarray(atom_order, dtype=np.int64),
        cutoff=graph.cutoff,
        resolution=float(resolution),
    )
