"""Radius-graph neighbour lists with periodic boundaries, built on ``vesin``.

Conventions (shared with :class:`dequiformer.data.graph.AtomicGraph`):

* the list is *full*: every pair appears in both directions;
* ``edge_index[0]`` is the source (neighbour) ``j``, ``edge_index[1]`` the target
  (centre atom) ``i``;
* the edge vector is ``positions[j] - positions[i] + shifts @ cell`` with ``shifts``
  integer image counts;
* an atom is never its own neighbour at zero shift, but its periodic images are
  regular neighbours (small cells);
* pairs at exactly the cutoff distance are excluded (``d < cutoff``), as in ASE.

Periodicity may be switched on in any subset of the three directions; the cell rows
of non-periodic directions are ignored (they may be zero).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import vesin

__all__ = ["MIN_DISTANCE", "neighbor_list", "check_cell", "check_positions"]

#: Two atoms (or an atom and a periodic image) closer than this, in Angstrom, are
#: rejected as a broken structure.
MIN_DISTANCE = 1e-3

# Distances are rounded to this many decimals (Angstrom) before sorting, so that
# symmetry-equivalent neighbours that differ only by float round-off are ordered by
# index and shift rather than by noise.
_TIE_DECIMALS = 8


def check_positions(positions: np.ndarray) -> np.ndarray:
    """Validate Cartesian positions and return them as a float64 ``[N, 3]`` array.

    Raises ``ValueError`` naming the first atom with a NaN or infinite coordinate.
    """
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {list(pos.shape)}")
    bad = np.flatnonzero(~np.isfinite(pos).all(axis=1))
    if bad.size:
        a = int(bad[0])
        raise ValueError(f"atom {a} has a non-finite position {pos[a].tolist()}")
    return np.ascontiguousarray(pos)


def check_cell(cell: np.ndarray | None, pbc: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a cell and its periodic flags.

    Args:
        cell: ``[3, 3]`` lattice vectors as rows, Angstrom, or ``None`` (no cell: zeros).
        pbc: ``[3]`` periodic flags (a single bool is broadcast).

    Returns:
        ``(cell, pbc)`` as a float64 ``[3, 3]`` array and a bool ``[3]`` array.

    Raises:
        ValueError: if the cell is not finite, or if the lattice vectors of the periodic
            directions are zero or (near-)linearly dependent, naming those directions.
    """
    cell_a = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell_a.shape != (3, 3):
        raise ValueError(f"cell must have shape [3, 3], got {list(cell_a.shape)}")
    if not np.isfinite(cell_a).all():
        raise ValueError("cell contains NaN or infinite values")
    pbc_a = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()

    periodic = np.flatnonzero(pbc_a)
    zero = [int(k) for k in periodic if np.linalg.norm(cell_a[k]) < MIN_DISTANCE]
    if zero:
        raise ValueError(
            f"cell vector(s) of periodic direction(s) {_dirs(zero)} are zero; "
            "give a cell or set pbc=False there"
        )
    # The height of direction k is the distance of a_k from the span of the other
    # periodic vectors; a (near-)zero height means a singular periodic lattice.
    flat = []
    for k in periodic:
        others = cell_a[[o for o in periodic if o != k]]
        h = np.linalg.norm(cell_a[k])
        if len(others):
            coef, *_ = np.linalg.lstsq(others.T, cell_a[k], rcond=None)
            h = np.linalg.norm(cell_a[k] - others.T @ coef)
        if h < MIN_DISTANCE:
            flat.append(int(k))
    if flat:
        raise ValueError(
            f"cell is singular along periodic direction(s) {_dirs(flat)}: "
            "the lattice vectors are (nearly) linearly dependent"
        )
    return cell_a, pbc_a


def neighbor_list(
    positions: np.ndarray,
    cell: np.ndarray | None,
    pbc: Sequence[bool] | np.ndarray,
    cutoff: float,
    max_neighbors: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full radius-graph neighbour list of one structure.

    Args:
        positions: ``[N, 3]`` Cartesian positions, Angstrom (need not be wrapped).
        cell: ``[3, 3]`` lattice vectors as rows, Angstrom, or ``None``/zeros for a molecule.
        pbc: ``[3]`` bool, periodicity of each lattice direction (any subset).
        cutoff: radius in Angstrom; pairs with distance ``< cutoff`` are neighbours.
        max_neighbors: if given, keep per target atom only its ``max_neighbors`` nearest
            neighbours; ties broken by distance, then source index, then shift.

    Returns:
        ``edge_index`` int64 ``[2, E]`` (row 0 source ``j``, row 1 target ``i``) and
        ``shifts`` int64 ``[E, 3]`` such that the edge vector is
        ``positions[j] - positions[i] + shifts @ cell``. Edges are sorted by target,
        then distance, then source, then shift.

    Raises:
        ValueError: non-finite positions, bad cell (see :func:`check_cell`), invalid
            cutoff/max_neighbors, or two atoms (periodic images included) closer than
            :data:`MIN_DISTANCE`; the message names the atoms.
    """
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive finite number, got {cutoff!r}")
    if max_neighbors is not None and (
        isinstance(max_neighbors, bool) or int(max_neighbors) != max_neighbors or max_neighbors < 1
    ):
        raise ValueError(f"max_neighbors must be None or a positive integer, got {max_neighbors!r}")
    pos = check_positions(positions)
    cell_a, pbc_a = check_cell(cell, pbc)
    n = pos.shape[0]
    if n == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)

    # Rows of non-periodic directions carry no meaning; zero them so that an arbitrary
    # (even singular) vacuum box cannot influence the search.
    box = np.where(pbc_a[:, None], cell_a, 0.0)
    search = max(float(cutoff), 2.0 * MIN_DISTANCE)  # always see overlapping atoms
    calculator = vesin.NeighborList(cutoff=search, full_list=True, n_threads=1)
    i, j, shifts, dist = calculator.compute(pos, box, pbc_a.tolist(), "ijSd")
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shifts = shifts.astype(np.int64).reshape(-1, 3)
    dist = np.asarray(dist, dtype=np.float64)

    _check_contacts(i, j, shifts, dist)
    keep = dist < cutoff
    i, j, shifts, dist = i[keep], j[keep], shifts[keep], dist[keep]

    # np.lexsort sorts by the last key first.
    order = np.lexsort(
        (shifts[:, 2], shifts[:, 1], shifts[:, 0], j, np.round(dist, _TIE_DECIMALS), i)
    )
    i, j, shifts = i[order], j[order], shifts[order]

    if max_neighbors is not None and i.size:
        counts = np.bincount(i, minlength=n)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(i.size) - starts[i]
        keep = rank < int(max_neighbors)
        i, j, shifts = i[keep], j[keep], shifts[keep]

    return np.stack([j, i]).astype(np.int64), np.ascontiguousarray(shifts)


def _check_contacts(i: np.ndarray, j: np.ndarray, shifts: np.ndarray, dist: np.ndarray) -> None:
    close = np.flatnonzero(dist < MIN_DISTANCE)
    if not close.size:
        return
    # Report the lowest pair deterministically.
    k = close[np.lexsort((j[close], i[close]))[0]]
    a, b, s, d = int(i[k]), int(j[k]), shifts[k].tolist(), float(dist[k])
    image = "" if not any(s) else f" (periodic image shift {tuple(s)})"
    if a == b:
        raise ValueError(
            f"atom {a} is {d:.2e} A from its own periodic image{image}, "
            f"closer than {MIN_DISTANCE} A"
        )
    lo, hi = min(a, b), max(a, b)
    raise ValueError(
        f"atoms {lo} and {hi} are {d:.2e} A apart{image}, closer than {MIN_DISTANCE} A "
        "(duplicated or overlapping atoms)"
    )


def _dirs(ks: Sequence[int]) -> str:
    return ", ".join(f"{k} ({'abc'[k]})" for k in ks)
