"""Each training frame's fixed point from its previous training step, to warm-start its next solve.

Between two visits of a frame the weights move only a little, so last epoch's fixed point is a
far better starting guess than zero: fewer forward solver steps per training step, with the
same tolerance (the solve still runs to ``deq.tol``, so results agree with cold solves within
that tolerance). States are kept on the CPU in the model's dtype, up to a memory cap.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..data.graph import AtomicGraph
from ..deq.warm_start import WarmStartStore


class FramewiseFixedPoints:
    """Fixed points ``[n_atoms, K, C]`` keyed by training-frame index.

    Args:
        max_mb: memory cap in MiB; frames beyond it are simply not stored (solved cold).
    """

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(float(max_mb) * 2**20)
        self.bytes = 0
        self._store = WarmStartStore()
        self.hits = 0
        self.lookups = 0

    def initial_guess(self, indices: Sequence[int], graph: AtomicGraph) -> torch.Tensor | None:
        """``z0`` ``[N, K, C]`` for a batch of frames ``indices`` (zeros, i.e. a cold start, for
        frames without a stored state), or ``None`` when no frame of the batch has one."""
        parts: list[torch.Tensor | None] = []
        ranges = _row_ranges(graph)
        for (a, e), i in zip(ranges, indices):
            z = self._store.get(int(i), graph.atomic_numbers[a:e], on_mismatch="reset")
            self.lookups += 1
            self.hits += z is not None
            parts.append(z)
        like = next((p for p in parts if p is not None), None)
        if like is None:
            return None
        filled = [p if p is not None else like.new_zeros(e - a, *like.shape[1:]) for (a, e), p in zip(ranges, parts)]
        return torch.cat(filled).to(device=graph.pos.device)

    def update(self, indices: Sequence[int], graph: AtomicGraph, fixed_point: torch.Tensor) -> None:
        """Keep each frame's rows of ``fixed_point`` ``[N, K, C]`` (detached, on the CPU)."""
        z = fixed_point.detach().to("cpu")
        for (a, e), i in zip(_row_ranges(graph), indices):
            rows, species = z[a:e], graph.atomic_numbers[a:e]
            new = rows.numel() * rows.element_size()
            if int(i) not in self._store:
                if self.bytes + new > self.max_bytes:
                    continue
                self.bytes += new
            self._store.put(int(i), rows, species)

    def state_dict(self) -> dict:
        """Stored states for the run's ``last.pt`` (so a resumed run warm-starts as an uninterrupted one)."""
        return {"store": self._store.state_dict(), "bytes": self.bytes}

    def load_state_dict(self, state: dict) -> None:
        self._store.load_state_dict(state["store"])
        self.bytes = int(state["bytes"])

    def __len__(self) -> int:
        return len(self._store)


def _row_ranges(graph: AtomicGraph) -> list[tuple[int, int]]:
    """``(first, end)`` atom rows of each structure of a collated batch (atoms are contiguous)."""
    ends = torch.cumsum(torch.bincount(graph.batch, minlength=graph.num_graphs), 0).tolist()
    return list(zip([0] + ends[:-1], ends))
