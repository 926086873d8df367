"""AtomicGraph construction, batching and neighbour lists (checked against ASE)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from dequiformer.data.graph import AtomicGraph
from dequiformer.data.neighbors import neighbor_list

TRICLINIC = np.array([[2.6, 0.0, 0.0], [0.9, 2.4, 0.0], [0.5, -0.7, 2.8]])


def _random_atoms(n: int, cell: np.ndarray, pbc, seed: int, spread=None) -> Atoms:
    rng = np.random.default_rng(seed)
    box = np.diag(spread) if spread is not None else cell
    pos = rng.random((n, 3)) @ box
    return Atoms(numbers=rng.integers(1, 10, n), positions=pos, cell=cell, pbc=pbc)


STRUCTURES = {
    "molecule": _random_atoms(6, np.zeros((3, 3)), False, 0, spread=[3.0, 3.0, 3.0]),
    "triclinic_3d": _random_atoms(3, TRICLINIC, True, 1),
    # positions outside the cell in every direction must still be handled
    "triclinic_3d_unwrapped": _random_atoms(3, TRICLINIC, True, 2, spread=[9.0, -7.0, 8.0]),
    "slab": _random_atoms(5, np.array([[2.7, 0, 0], [1.1, 2.5, 0], [0.4, 0.2, 9.0]]), (True, True, False), 3),
    # a vacuum direction without a cell vector; atoms far outside the box along it
    "slab_zero_c": _random_atoms(4, np.array([[2.7, 0, 0], [1.1, 2.5, 0], [0, 0, 0]]), (True, True, False), 4, spread=[3.0, 3.0, 12.0]),
    "wire": _random_atoms(4, np.array([[0, 0, 0], [0, 0, 0], [0.3, 0.2, 2.2]]), (False, False, True), 5, spread=[3.0, 3.0, 2.0]),
    "mixed_pbc_xz": _random_atoms(4, TRICLINIC, (True, False, True), 6),
}


def _edge_set(edge_index: np.ndarray, shifts: np.ndarray) -> set:
    # ours: edge_index[0] = j (source), edge_index[1] = i (target); ASE: i, j, S
    return {(int(i), int(j), tuple(int(s) for s in S)) for j, i, S in zip(edge_index[0], edge_index[1], shifts)}


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_neighbor_list_matches_ase(name):
    atoms = STRUCTURES[name]
    cutoff = 3.1
    ei, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff, None)
    ai, aj, aS = ase_neighbor_list("ijS", atoms, cutoff)
    expected = {(int(i), int(j), tuple(int(s) for s in S)) for i, j, S in zip(ai, aj, aS)}
    assert len(expected) > 0
    assert _edge_set(ei, shifts) == expected
    assert ei.shape == (2, len(expected)) and shifts.shape == (len(expected), 3)
    assert ei.dtype == np.int64
    # no shift along non-periodic directions
    assert not np.any(shifts[:, ~atoms.pbc])


def test_small_cell_has_self_images():
    atoms = STRUCTURES["triclinic_3d"]
    ei, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 3.1, None)
    self_edges = ei[0] == ei[1]
    assert self_edges.any()
    assert np.all(np.abs(shifts[self_edges]).sum(axis=1) > 0)


def test_edge_vectors_and_gradients():
    atoms = STRUCTURES["triclinic_3d_unwrapped"]
    cutoff = 3.1
    g = AtomicGraph.from_atoms(atoms, cutoff=cutoff, dtype=torch.float64)
    g.pos.requires_grad_(True)
    g.cell.requires_grad_(True)
    vec = g.edge_vectors()
    assert vec.shape == (g.num_edges, 3)
    lengths = vec.norm(dim=-1)
    assert torch.all(lengths <= cutoff) and torch.all(lengths > 0)
    # same vectors as ASE
    ai, aj, aD = ase_neighbor_list("ijD", atoms, cutoff)
    ours = sorted(map(tuple, np.round(vec.detach().numpy(), 8)))
    theirs = sorted(map(tuple, np.round(aD, 8)))
    assert ours == theirs
    lengths.sum().backward()
    assert g.pos.grad is not None and torch.isfinite(g.pos.grad).all()
    assert g.cell.grad is not None and g.cell.grad.abs().sum() > 0
    # a translation-invariant quantity: per-atom gradients sum to zero
    assert torch.allclose(g.pos.grad.sum(0), torch.zeros(3, dtype=torch.float64), atol=1e-10)


def test_edges_sorted_by_target_then_distance():
    g = AtomicGraph.from_atoms(STRUCTURES["slab"], cutoff=3.1, dtype=torch.float64)
    dst = g.edge_index[1]
    assert torch.all(dst[1:] >= dst[:-1])
    d = g.edge_vectors().norm(dim=-1)
    same = dst[1:] == dst[:-1]
    assert torch.all(d[1:][same] >= d[:-1][same] - 1e-9)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_max_neighbors_keeps_nearest(k):
    atoms = STRUCTURES["triclinic_3d"]
    full = AtomicGraph.from_atoms(atoms, cutoff=3.1, dtype=torch.float64)
    capped = AtomicGraph.from_atoms(atoms, cutoff=3.1, max_neighbors=k, dtype=torch.float64)
    assert capped.max_neighbors == k
    d_full, d_cap = full.edge_vectors().norm(dim=-1), capped.edge_vectors().norm(dim=-1)
    for i in range(len(atoms)):
        want = torch.sort(d_full[full.edge_index[1] == i]).values[:k]
        got = torch.sort(d_cap[capped.edge_index[1] == i]).values
        assert torch.allclose(got, want)


def test_max_neighbors_tie_breaking_is_deterministic():
    # simple cubic: six equidistant images of atom 0; ties go to the smallest shift
    atoms = Atoms("Cu", positions=[[0.3, 0.2, 0.1]], cell=np.eye(3) * 2.0, pbc=True)
    ei, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, 2.1, 3)
    assert ei.tolist() == [[0, 0, 0], [0, 0, 0]]
    assert shifts.tolist() == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    # ties between different sources go to the lower source index
    mol = Atoms("H3", positions=[[0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]])
    ei, _ = neighbor_list(mol.positions, None, [False] * 3, 1.5, 1)
    assert ei.tolist() == [[1, 0, 0], [0, 1, 2]]


def _labelled(atoms: Atoms, seed: int, stress: bool) -> Atoms:
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    results = {"energy": float(rng.normal()), "forces": rng.normal(size=(len(atoms), 3))}
    if stress:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.set_tags(np.arange(len(atoms)) % 3)
    atoms.set_constraint(FixAtoms(indices=[0]))
    return atoms


def _assert_graphs_equal(a: AtomicGraph, b: AtomicGraph) -> None:
    assert a.cutoff == b.cutoff and a.max_neighbors == b.max_neighbors
    for name in ("pos", "atomic_numbers", "batch", "cell", "pbc", "edge_index", "cell_shifts",
                 "natoms", "energy", "forces", "stress", "fixed", "tags", "labels"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


def test_collate_unbatch_round_trip_and_from_atoms_list():
    names = ["molecule", "triclinic_3d", "slab", "wire"]
    atoms_list = [_labelled(STRUCTURES[n], s, stress=True) for s, n in enumerate(names)]
    singles = [AtomicGraph.from_atoms(a, cutoff=3.1, with_labels=True) for a in atoms_list]
    batch = AtomicGraph.collate(singles)
    assert batch.num_graphs == 4 and batch.num_atoms == sum(len(a) for a in atoms_list)
    assert batch.num_edges == sum(g.num_edges for g in singles)
    assert batch.batch.tolist() == sum(([k] * len(a) for k, a in enumerate(atoms_list)), [])
    _assert_graphs_equal(batch, AtomicGraph.from_atoms(atoms_list, cutoff=3.1, with_labels=True))
    for a, b in zip(batch.unbatch(), singles):
        _assert_graphs_equal(a, b)
    # collating batches also works
    _assert_graphs_equal(AtomicGraph.collate([AtomicGraph.collate(singles[:2]), AtomicGraph.collate(singles[2:])]), batch)
    # the batched edge vectors are the single ones, concatenated
    assert torch.allclose(batch.edge_vectors(), torch.cat([g.edge_vectors() for g in singles]))


def test_labels_read_from_calculator():
    atoms = _labelled(STRUCTURES["triclinic_3d"], 0, stress=True)
    g = AtomicGraph.from_atoms(atoms, cutoff=3.1, with_labels=True, dtype=torch.float64)
    assert g.energy.shape == (1,) and g.energy.item() == pytest.approx(atoms.get_potential_energy())
    assert np.allclose(g.forces.numpy(), atoms.calc.results["forces"])  # unconstrained forces
    assert np.allclose(g.stress[0].numpy(), atoms.get_stress(voigt=False))
    assert g.fixed.tolist() == [True, False, False]
    assert g.tags.tolist() == [0, 1, 2] and g.tags.dtype == torch.long
    # without labels, or without a calculator, labels are None
    assert AtomicGraph.from_atoms(atoms, cutoff=3.1).energy is None
    bare = AtomicGraph.from_atoms(STRUCTURES["molecule"], cutoff=3.1, with_labels=True)
    assert bare.energy is None and bare.forces is None and bare.stress is None
    assert bare.fixed.tolist() == [False] * 6
    # a label missing for one structure is None for the batch
    mixed = AtomicGraph.from_atoms([atoms, STRUCTURES["molecule"]], cutoff=3.1, with_labels=True)
    assert mixed.energy is None and mixed.tags is not None


def test_from_arrays():
    atoms = STRUCTURES["slab"]
    g = AtomicGraph.from_arrays(
        torch.tensor(atoms.positions), atoms.numbers, atoms.cell.array, atoms.pbc,
        cutoff=3.1, energy=1.5, forces=np.zeros((len(atoms), 3)),
    )
    ref = AtomicGraph.from_atoms(atoms, cutoff=3.1)
    assert torch.equal(g.edge_index, ref.edge_index) and torch.equal(g.cell_shifts, ref.cell_shifts)
    assert g.energy.tolist() == [1.5] and g.forces.shape == (len(atoms), 3)
    mol = AtomicGraph.from_arrays([[0, 0, 0], [0, 0, 0.74]], [1, 1], cutoff=2.0)
    assert mol.num_edges == 2 and not mol.pbc.any() and torch.equal(mol.cell, torch.zeros(1, 3, 3))


def test_to_float64_keeps_integer_tensors():
    g = AtomicGraph.from_atoms(_labelled(STRUCTURES["slab"], 0, stress=False), cutoff=3.1, with_labels=True)
    h = g.to(dtype=torch.float64)
    assert h is not g and g.pos.dtype == torch.float32
    for name in ("pos", "cell", "cell_shifts", "energy", "forces"):
        assert getattr(h, name).dtype == torch.float64, name
    for name in ("atomic_numbers", "batch", "edge_index", "natoms", "tags"):
        assert getattr(h, name).dtype == torch.long, name
    assert h.pbc.dtype == torch.bool and h.fixed.dtype == torch.bool
    assert torch.allclose(h.edge_vectors().float(), g.edge_vectors())


def test_isolated_atom_has_no_edges():
    g = AtomicGraph.from_atoms(Atoms("Ar", positions=[[0, 0, 0]]), cutoff=5.0)
    assert g.num_edges == 0 and g.edge_index.shape == (2, 0) and g.cell_shifts.shape == (0, 3)
    assert g.edge_vectors().shape == (0, 3)
    # an isolated atom inside a batch
    far = Atoms("H2Ar", positions=[[0, 0, 0], [0, 0, 0.7], [20, 0, 0]])
    g = AtomicGraph.from_atoms(far, cutoff=5.0)
    assert g.num_edges == 2 and 2 not in g.edge_index


ok = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])


@pytest.mark.parametrize(
    "bad, message",
    [
        (Atoms(), r"structure 2 has no atoms"),
        (Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [0, np.nan, 0]]), r"structure 2: atom 2 has a non-finite position"),
        (Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [np.inf, 0, 0]]), r"structure 2: atom 2 has a non-finite"),
        (Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [1, 0, 5e-4]]), r"structure 2: atoms 1 and 2 are .* apart"),
        # overlap only through a periodic image
        (Atoms("H2", positions=[[0, 0, 0.0002], [0, 0, 2.9999]], cell=np.eye(3) * 3, pbc=True),
         r"structure 2: atoms 0 and 1 are .* apart \(periodic image shift"),
        (Atoms("H", positions=[[0, 0, 0]], pbc=True), r"structure 2: cell vector\(s\) of periodic direction\(s\) 0 \(a\), 1 \(b\), 2 \(c\) are zero"),
        (Atoms("H", positions=[[0, 0, 0]], cell=[3, 3, 0], pbc=[True, False, True]), r"structure 2: .*direction\(s\) 2 \(c\) are zero"),
        (Atoms("H", positions=[[0, 0, 0]], cell=[[3, 0, 0], [6, 0, 0], [0, 0, 3]], pbc=True), r"structure 2: cell is singular along periodic direction\(s\) 0 \(a\), 1 \(b\)"),
        (Atoms(numbers=[1, 0, 1], positions=[[0, 0, 0], [1, 0, 0], [2, 0, 0]]), r"structure 2: atom 1 has atomic number 0"),
    ],
)
def test_validation_errors_name_structure_and_atom(bad, message):
    with pytest.raises(ValueError, match=message):
        AtomicGraph.from_atoms([ok, ok, bad], cutoff=3.0)


def test_validation_from_arrays():
    with pytest.raises(ValueError, match=r"structure 0: atom 0 has atomic number -1"):
        AtomicGraph.from_arrays([[0, 0, 0]], [-1], cutoff=3.0)
    with pytest.raises(ValueError, match=r"structure 0 has no atoms"):
        AtomicGraph.from_arrays(np.zeros((0, 3)), [], cutoff=3.0)
    with pytest.raises(ValueError, match="cutoff"):
        AtomicGraph.from_arrays([[0, 0, 0]], [1], cutoff=0.0)
    with pytest.raises(ValueError, match="max_neighbors"):
        AtomicGraph.from_arrays([[0, 0, 0]], [1], cutoff=3.0, max_neighbors=0)
    with pytest.raises(ValueError, match="cutoff"):
        AtomicGraph.collate([AtomicGraph.from_arrays([[0, 0, 0]], [1], cutoff=3.0),
                             AtomicGraph.from_arrays([[0, 0, 0]], [1], cutoff=4.0)])
