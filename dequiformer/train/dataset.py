"""Frames -> labelled ``AtomicGraph`` batches for training: cached neighbour lists, epoch
batching with DDP sharding, and normalisation written into the model's scaling buffers."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from ..data.graph import AtomicGraph
from ..data.normalization import Normalizer
from ..data.readers.frames import Frame


def frame_to_graph(frame: Frame, cutoff: float, max_neighbors: int | None, dtype: torch.dtype,
                   where: str = "frame") -> AtomicGraph:
    """One labelled graph from a :class:`Frame`.

    Positions/forces/cell in ``dtype``; the energy label is kept in float64 (total energies of
    ~1e5 kcal/mol lose their last digits in float32). ``fixed`` and ``tags`` are carried over.
    ``where`` names the frame in error messages. A stress label ([3, 3], energy unit / A^3) is
    carried over as ``[1, 3, 3]``.
    """
    try:
        graph = AtomicGraph.from_arrays(
            frame.positions, frame.numbers, frame.cell, frame.pbc, cutoff=cutoff, max_neighbors=max_neighbors,
            dtype=dtype, forces=frame.forces,
        )
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    n = graph.num_atoms
    energy = None if frame.energy is None else torch.tensor([float(frame.energy)], dtype=torch.float64)
    fixed = None if frame.fixed is None else torch.as_tensor(np.asarray(frame.fixed, dtype=bool)).reshape(n)
    tags = None if frame.tags is None else torch.as_tensor(np.asarray(frame.tags, dtype=np.int64)).reshape(n)
    stress = None if getattr(frame, "stress", None) is None else torch.as_tensor(
        np.asarray(frame.stress, dtype=np.float64), dtype=dtype).reshape(1, 3, 3)
    return dataclasses.replace(graph, energy=energy, fixed=fixed, tags=tags, stress=stress)


class GraphDataset:
    """Graphs of a frame sequence, built on first use and cached (``cache=True``).

    Args:
        frames: a :class:`~dequiformer.data.readers.FrameDataset` or list of frames.
        cutoff: neighbour cutoff (Angstrom); max_neighbors: per-atom cap.
        dtype: float dtype of positions and forces.
        require_labels: raise (naming the frame) when energy or forces are missing.
    """

    def __init__(self, frames: Sequence[Frame], cutoff: float, max_neighbors: int | None, dtype: torch.dtype,
                 cache: bool = True, require_labels: bool = True, name: str = "data") -> None:
        self.frames = frames
        self.cutoff = float(cutoff)
        self.max_neighbors = max_neighbors
        self.dtype = dtype
        self.cache = bool(cache)
        self.require_labels = require_labels
        self.name = name
        self.source = str(getattr(frames, "source", name))
        self._graphs: dict[int, AtomicGraph] = {}

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> AtomicGraph:
        i = int(i)
        graph = self._graphs.get(i)
        if graph is None:
            frame = self.frames[i]
            where = f"{self.source}: {self.name} frame {i}"
            if self.require_labels and (frame.energy is None or frame.forces is None):
                missing = "energy" if frame.energy is None else "forces"
                raise ValueError(f"{where} has no {missing} label; training and evaluation need energy and forces")
            graph = frame_to_graph(frame, self.cutoff, self.max_neighbors, self.dtype, where)
            if self.cache:
                self._graphs[i] = graph
        return graph

    def frame_label(self, i: int) -> str:
        """``"<source>: frame K"`` with K the frame's index in its file (where the frames know it)."""
        sources = getattr(self.frames, "source_indices", None)
        return f"{self.source}: frame {int(sources[int(i)]) if sources is not None else int(i)}"

    def batch(self, indices: Sequence[int], device: torch.device | str = "cpu") -> AtomicGraph:
        """Collate the graphs at ``indices`` into one batch on ``device``."""
        graph = AtomicGraph.collate([self[int(i)] for i in indices])
        return graph.to(device=device) if str(device) != "cpu" else graph


def epoch_batches(n: int, batch_size: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = True,
                  rank: int = 0, world_size: int = 1, max_batches: int | None = None) -> list[np.ndarray]:
    """Index batches of one epoch for this rank.

    The epoch's order is ``default_rng([seed, epoch]).permutation(n)`` (identical on all ranks, and
    reproducible on resume without saved sampler state). It is cut into global batches of
    ``batch_size * world_size``; rank ``r`` takes elements ``r, r + W, ...`` of each. With
    ``world_size > 1`` a last global batch smaller than ``world_size`` is dropped so that every rank
    gets at least one structure per step. Every rank gets the same number of batches.
    """
    if n <= 0:
        return []
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n) if shuffle else np.arange(n)
    size = int(batch_size) * int(world_size)
    chunks = [order[i:i + size] for i in range(0, n, size)]
    if world_size > 1 and len(chunks[-1]) < world_size:
        chunks = chunks[:-1]
    if max_batches is not None:
        chunks = chunks[:int(max_batches)]
    return [c[rank::world_size] for c in chunks]


def graph_statistics(graphs: GraphDataset, max_frames: int = 1000, seed: int = 0) -> dict[str, float]:
    """Mean atoms per structure and mean neighbours per atom over (a seeded sample of) graphs."""
    n = len(graphs)
    idx = np.arange(n) if n <= max_frames else np.sort(np.random.default_rng(seed).permutation(n)[:max_frames])
    atoms = edges = 0
    for i in idx:
        g = graphs[int(i)]
        atoms += g.num_atoms
        edges += g.num_edges
    return {"avg_num_nodes": atoms / max(len(idx), 1), "avg_degree": edges / max(atoms, 1)}


def apply_normalization(model: torch.nn.Module, normalizer: Normalizer) -> None:
    """Write the fitted statistics into ``model.scaling``.

    ``energy_scale = force_scale = normalizer.scale`` (training units; one scale keeps forces
    consistent with the energy in normalised units) and ``energy_reference[Z] = reference`` for
    each element of the normaliser (0 for others).
    """
    scaling = getattr(model, "scaling", None)
    if scaling is None:
        raise ValueError("model has no output scaling (classification models are not trained by this trainer)")
    ref = scaling.energy_reference
    bad = [z for z in normalizer.elements if int(z) >= ref.shape[0]]
    if bad:
        raise ValueError(f"element Z={bad[0]} in the training data is outside model.max_num_elements={ref.shape[0]}")
    with torch.no_grad():
        scaling.energy_scale.fill_(float(normalizer.scale))
        scaling.force_scale.fill_(float(normalizer.scale))
        ref.zero_()
        for z, value in zip(normalizer.elements, normalizer.references):
            ref[int(z)] = float(value)


def model_scales(model: torch.nn.Module) -> tuple[float, float]:
    """``(energy_scale, force_scale)`` of a model's output scaling, as floats."""
    return float(model.scaling.energy_scale), float(model.scaling.force_scale)
