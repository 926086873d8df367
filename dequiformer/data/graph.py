"""``AtomicGraph``: a batch of atomic structures with their radius-graph edges.

Positions and cells are in Angstrom. Energies, forces and stresses are in whatever
units the data came in (eV, eV/A and eV/A^3 for ASE; the dataset code records units).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from dequiformer.data.neighbors import neighbor_list

if TYPE_CHECKING:  # pragma: no cover
    import ase

__all__ = ["AtomicGraph"]

# Per-atom and per-graph optional label fields, used by collate/unbatch.
_ATOM_LABELS = ("forces", "fixed", "tags")
_GRAPH_LABELS = ("energy", "stress", "labels")


@dataclass
class AtomicGraph:
    """One or more structures (a batch) as a graph with periodic edges.

    ``N`` atoms, ``B`` graphs, ``E`` directed edges. Edge ``e`` goes from source
    ``j = edge_index[0, e]`` (the neighbour) to target ``i = edge_index[1, e]`` (the
    centre atom); its vector is ``pos[j] - pos[i] + cell_shifts[e] @ cell[batch[i]]``.
    The list is full (both directions) and, as built here, sorted by target atom
    and then distance.

    Attributes:
        pos: ``[N, 3]`` float, Cartesian positions, Angstrom.
        atomic_numbers: ``[N]`` long.
        batch: ``[N]`` long, graph index ``0..B-1`` of each atom, contiguous and sorted.
        cell: ``[B, 3, 3]`` float, lattice vectors as rows, Angstrom (zeros for molecules).
        pbc: ``[B, 3]`` bool.
        edge_index: ``[2, E]`` long, global atom indices.
        cell_shifts: ``[E, 3]`` float, integer image counts.
        natoms: ``[B]`` long, atoms per graph.
        cutoff: neighbour cutoff radius in Angstrom the edges were built with.
        max_neighbors: per-atom neighbour cap the edges were built with (``None``: no cap).
        energy: ``[B]`` float or ``None``.
        forces: ``[N, 3]`` float or ``None``.
        stress: ``[B, 3, 3]`` float or ``None`` (ASE sign convention).
        fixed: ``[N]`` bool or ``None``, atoms held fixed (OC20 / ``FixAtoms``).
        tags: ``[N]`` long or ``None``.
        labels: ``[B]`` long or ``None``, graph class labels.
    """

    pos: torch.Tensor
    atomic_numbers: torch.Tensor
    batch: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_index: torch.Tensor
    cell_shifts: torch.Tensor
    natoms: torch.Tensor
    cutoff: float
    max_neighbors: int | None = None
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    fixed: torch.Tensor | None = None
    tags: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, b, e = self.pos.shape[0], self.natoms.shape[0], self.edge_index.shape[-1]
        expected = {
            "pos": (n, 3),
            "atomic_numbers": (n,),
            "batch": (n,),
            "cell": (b, 3, 3),
            "pbc": (b, 3),
            "edge_index": (2, e),
            "cell_shifts": (e, 3),
            "energy": (b,),
            "forces": (n, 3),
            "stress": (b, 3, 3),
            "fixed": (n,),
            "tags": (n,),
            "labels": (b,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"AtomicGraph.{name} has shape {list(value.shape)}, expected {list(shape)}"
                )

    # ------------------------------------------------------------------ sizes
    @property
    def num_graphs(self) -> int:
        """Number of structures ``B`` in the batch."""
        return int(self.natoms.shape[0])

    @property
    def num_atoms(self) -> int:
        """Total number of atoms ``N``."""
        return int(self.pos.shape[0])

    @property
    def num_edges(self) -> int:
        """Total number of directed edges ``E``."""
        return int(self.edge_index.shape[1])

    # -------------------------------------------------------------- geometry
    def edge_vectors(self) -> torch.Tensor:
        """Edge vectors ``r_j - r_i + S @ cell``, ``[E, 3]``, Angstrom.

        Computed from ``pos`` and ``cell`` on every call, so gradients flow to both
        (forces by autograd, stress by a strain applied to ``pos`` and ``cell``).
        """
        src, dst = self.edge_index[0], self.edge_index[1]
        shift = torch.einsum(
            "ek,ekl->el", self.cell_shifts.to(self.cell.dtype), self.cell[self.batch[dst]]
        )
        return self.pos[src] - self.pos[dst] + shift

    # --------------------------------------------------------------- movement
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "AtomicGraph":
        """Return a new graph on ``device``; ``dtype`` is applied to float tensors only."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                if value.is_floating_point() and dtype is not None:
                    changes[f.name] = value.to(device=device, dtype=dtype)
                else:
                    changes[f.name] = value.to(device=device)
        return dataclasses.replace(self, **changes)

    # -------------------------------------------------------------- batching
    @staticmethod
    def collate(graphs: Sequence["AtomicGraph"]) -> "AtomicGraph":
        """Concatenate graphs (single structures or batches) into one batch.

        Edge indices are offset by the preceding atom counts and graph indices by the
        preceding graph counts. Each optional label is kept only when every input has
        it, else it is ``None``. All inputs must share ``cutoff`` and ``max_neighbors``.
        """
        graphs = list(graphs)
        if not graphs:
            raise ValueError("collate needs at least one graph")
        first = graphs[0]
        for k, g in enumerate(graphs):
            if g.cutoff != first.cutoff or g.max_neighbors != first.max_neighbors:
                raise ValueError(
                    f"graph {k} was built with cutoff={g.cutoff}, max_neighbors={g.max_neighbors}; "
                    f"graph 0 with cutoff={first.cutoff}, max_neighbors={first.max_neighbors}"
                )
        if len(graphs) == 1:
            return dataclasses.replace(first)

        device = first.pos.device
        atom_offsets = torch.tensor([0] + [g.num_atoms for g in graphs[:-1]], device=device).cumsum(0)
        graph_offsets = torch.tensor([0] + [g.num_graphs for g in graphs[:-1]], device=device).cumsum(0)
        out: dict[str, Any] = dict(
            pos=torch.cat([g.pos for g in graphs]),
            atomic_numbers=torch.cat([g.atomic_numbers for g in graphs]),
            batch=torch.cat([g.batch + o for g, o in zip(graphs, graph_offsets)]),
            cell=torch.cat([g.cell for g in graphs]),
            pbc=torch.cat([g.pbc for g in graphs]),
            edge_index=torch.cat([g.edge_index + o for g, o in zip(graphs, atom_offsets)], dim=1),
            cell_shifts=torch.cat([g.cell_shifts for g in graphs]),
            natoms=torch.cat([g.natoms for g in graphs]),
            cutoff=first.cutoff,
            max_neighbors=first.max_neighbors,
        )
        for name in _ATOM_LABELS + _GRAPH_LABELS:
            values = [getattr(g, name) for g in graphs]
            out[name] = None if any(v is None for v in values) else torch.cat(values)
        return AtomicGraph(**out)

    def unbatch(self) -> list["AtomicGraph"]:
        """Split a batch into single-structure graphs (inverse of :meth:`collate`)."""
        counts = self.natoms.tolist()
        starts = [0]
        for c in counts[:-1]:
            starts.append(starts[-1] + c)
        edge_graph = self.batch[self.edge_index[1]]
        order = torch.argsort(edge_graph, stable=True)
        edge_counts = torch.bincount(edge_graph, minlength=self.num_graphs).tolist()
        edge_index = self.edge_index[:, order].split(edge_counts, dim=1)
        cell_shifts = self.cell_shifts[order].split(edge_counts)

        graphs = []
        for b, (start, count) in enumerate(zip(starts, counts)):
            atoms = slice(start, start + count)
            fields: dict[str, Any] = dict(
                pos=self.pos[atoms],
                atomic_numbers=self.atomic_numbers[atoms],
                batch=torch.zeros_like(self.batch[atoms]),
                cell=self.cell[b : b + 1],
                pbc=self.pbc[b : b + 1],
                edge_index=edge_index[b] - start,
                cell_shifts=cell_shifts[b],
                natoms=self.natoms[b : b + 1],
                cutoff=self.cutoff,
                max_neighbors=self.max_neighbors,
            )
            for name in _ATOM_LABELS:
                value = getattr(self, name)
                fields[name] = None if value is None else value[atoms]
            for name in _GRAPH_LABELS:
                value = getattr(self, name)
                fields[name] = None if value is None else value[b : b + 1]
            graphs.append(AtomicGraph(**fields))
        return graphs

    # ----------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        positions: Any,
        atomic_numbers: Any,
        cell: Any = None,
        pbc: Any = None,
        *,
        cutoff: float,
        max_neighbors: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        energy: Any = None,
        forces: Any = None,
    ) -> "AtomicGraph":
        """Build a one-structure graph from arrays (numpy, torch or lists).

        Args:
            positions: ``[N, 3]`` Cartesian positions, Angstrom.
            atomic_numbers: ``[N]`` integers >= 1.
            cell: ``[3, 3]`` lattice vectors as rows, Angstrom; ``None`` for no cell.
            pbc: ``[3]`` bools or one bool; ``None`` means not periodic (as in ASE).
            cutoff: neighbour cutoff radius, Angstrom.
            max_neighbors: keep at most this many nearest neighbours per atom.
            dtype: float dtype of ``pos``, ``cell``, ``cell_shifts`` and float labels.
            device: device of every tensor.
            energy: scalar total energy (stored as ``[1]``), or ``None``.
            forces: ``[N, 3]`` forces, or ``None``.

        Raises:
            ValueError: invalid structure; the message starts with ``structure 0``.
        """
        return _build([
            _Frame(positions, atomic_numbers, cell, pbc, energy=energy, forces=forces)
        ], cutoff, max_neighbors, dtype, device)

    @classmethod
    def from_atoms(
        cls,
        atoms_or_list: "ase.Atoms | Sequence[ase.Atoms]",
        cutoff: float,
        max_neighbors: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        with_labels: bool = False,
    ) -> "AtomicGraph":
        """Build a batch from one ``ase.Atoms`` or a sequence of them.

        With ``with_labels=True``: ``energy``, ``forces`` (unconstrained) and, where
        the calculator provides it, ``stress`` (``[3, 3]``) are read from ``atoms.calc``;
        ``fixed`` from ``FixAtoms`` constraints and ``tags`` from ``atoms.get_tags()``.
        A label missing for any structure is ``None`` for the whole batch.

        Raises:
            ValueError: invalid structure; the message names its index in the list.
        """
        atoms_list = [atoms_or_list] if hasattr(atoms_or_list, "get_positions") else list(atoms_or_list)
        if not atoms_list:
            raise ValueError("from_atoms needs at least one structure, got an empty list")
        frames = [_frame_from_atoms(a, with_labels) for a in atoms_list]
        return _build(frames, cutoff, max_neighbors, dtype, device)


# ---------------------------------------------------------------------- helpers
@dataclass
class _Frame:
    """Raw arrays of one structure before validation."""

    positions: Any
    numbers: Any
    cell: Any = None
    pbc: Any = None
    energy: Any = None
    forces: Any = None
    stress: Any = None
    fixed: Any = None
    tags: Any = None


def _to_numpy(x: Any, dtype: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _frame_from_atoms(atoms: "ase.Atoms", with_labels: bool) -> _Frame:
    frame = _Frame(
        atoms.get_positions(), atoms.get_atomic_numbers(), atoms.cell.array, atoms.pbc
    )
    if not with_labels:
        return frame
    from ase.constraints import FixAtoms

    fixed = np.zeros(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            fixed[constraint.get_indices()] = True
    frame.fixed = fixed
    frame.tags = atoms.get_tags()
    calc = atoms.calc
    if calc is not None:
        frame.energy = _read_property(atoms, "energy", atoms.get_potential_energy)
        frame.forces = _read_property(
            atoms, "forces", lambda: atoms.get_forces(apply_constraint=False)
        )
        # Stress is only meaningful in 3D-periodic cells; read it there, or when the
        # calculator already holds one (e.g. a SinglePointCalculator from a file).
        if "stress" in calc.results or atoms.pbc.all():
            frame.stress = _read_property(atoms, "stress", lambda: atoms.get_stress(voigt=False))
    return frame


def _read_property(atoms: "ase.Atoms", name: str, getter: Any) -> Any:
    from ase.calculators.calculator import PropertyNotImplementedError

    calc = atoms.calc
    if name not in calc.results and name not in getattr(calc, "implemented_properties", ()):
        return None
    try:
        return getter()
    except (PropertyNotImplementedError, NotImplementedError):
        return None


def _validate_frame(frame: _Frame, index: int) -> tuple[np.ndarray, np.ndarray]:
    pos = _to_numpy(frame.positions, np.float64)
    numbers = _to_numpy(frame.numbers, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"structure {index}: positions must have shape [N, 3], got {list(pos.shape)}")
    if pos.shape[0] == 0:
        raise ValueError(f"structure {index} has no atoms")
    if numbers.shape != (pos.shape[0],):
        raise ValueError(
            f"structure {index}: atomic_numbers has shape {list(numbers.shape)}, "
            f"expected [{pos.shape[0]}]"
        )
    bad = np.flatnonzero(~np.isfinite(numbers) | (numbers < 1) | (numbers != np.round(numbers)))
    if bad.size:
        a = int(bad[0])
        raise ValueError(
            f"structure {index}: atom {a} has atomic number {numbers[a]:g}; "
            "atomic numbers must be integers >= 1"
        )
    return pos, numbers.astype(np.int64)


def _build(
    frames: Sequence[_Frame],
    cutoff: float,
    max_neighbors: int | None,
    dtype: torch.dtype,
    device: torch.device | str,
) -> AtomicGraph:
    graphs = []
    for index, frame in enumerate(frames):
        pos, numbers = _validate_frame(frame, index)
        cell = np.zeros((3, 3)) if frame.cell is None else _to_numpy(frame.cell, np.float64)
        pbc = False if frame.pbc is None else _to_numpy(frame.pbc, bool)
        try:
            edge_index, shifts = neighbor_list(pos, cell, pbc, cutoff, max_neighbors)
        except ValueError as err:
            raise ValueError(f"structure {index}: {err}") from None
        n = pos.shape[0]

        def tensor(x: Any, tdtype: torch.dtype) -> torch.Tensor:
            # always a copy: the graph must not alias the caller's arrays
            return torch.tensor(np.array(_to_numpy(x, None)), dtype=tdtype, device=device)

        graphs.append(
            AtomicGraph(
                pos=tensor(pos, dtype),
                atomic_numbers=tensor(numbers, torch.long),
                batch=torch.zeros(n, dtype=torch.long, device=device),
                cell=tensor(cell, dtype).reshape(1, 3, 3),
                pbc=tensor(np.broadcast_to(pbc, (3,)), torch.bool).reshape(1, 3),
                edge_index=tensor(edge_index, torch.long),
                cell_shifts=tensor(shifts, dtype),
                natoms=torch.tensor([n], dtype=torch.long, device=device),
                cutoff=float(cutoff),
                max_neighbors=None if max_neighbors is None else int(max_neighbors),
                energy=_label(frame.energy, tensor, dtype, (), index, "energy", (1,)),
                forces=_label(frame.forces, tensor, dtype, (n, 3), index, "forces"),
                stress=_label(frame.stress, tensor, dtype, (3, 3), index, "stress", (1, 3, 3)),
                fixed=_label(frame.fixed, tensor, torch.bool, (n,), index, "fixed"),
                tags=_label(frame.tags, tensor, torch.long, (n,), index, "tags"),
            )
        )
    return AtomicGraph.collate(graphs)


def _label(
    value: Any,
    tensor: Any,
    dtype: torch.dtype,
    shape: tuple[int, ...],
    index: int,
    name: str,
    out_shape: tuple[int, ...] | None = None,
) -> torch.Tensor | None:
    """Optional per-structure label as a tensor of ``shape``, reshaped to ``out_shape``."""
    if value is None:
        return None
    t = tensor(value, dtype)
    if shape == () and t.numel() == 1:  # a scalar given as [1] or [[e]]
        t = t.reshape(())
    if tuple(t.shape) != shape:
        raise ValueError(f"structure {index}: {name} has shape {list(t.shape)}, expected {list(shape)}")
    return t if out_shape is None else t.reshape(out_shape)
