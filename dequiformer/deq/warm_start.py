"""Warm starts: keep the last fixed point per key, valid only for the same atoms.

A fixed point ``z*`` of one MD/relaxation step is the starting guess of the next. It is
only meaningful for the same number and species of atoms in the same order; anything
else must be refused (or, on request, dropped), never silently reused.
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import torch

__all__ = ["WarmStartMismatch", "WarmStartStore"]

_SHOWN = 8  # differing atoms listed in a mismatch message


class WarmStartMismatch(ValueError):
    """The stored warm start belongs to a different number or species of atoms."""


def _species(atomic_numbers: Any) -> np.ndarray:
    """Atomic numbers (numpy array, list or tensor) as a flat int64 numpy array."""
    if isinstance(atomic_numbers, torch.Tensor):
        atomic_numbers = atomic_numbers.detach().cpu().numpy()
    return np.asarray(atomic_numbers).astype(np.int64, copy=True).reshape(-1)


class WarmStartStore:
    """Fixed points keyed by arbitrary hashables (one per calculator or per trajectory).

    Each entry holds a detached copy of ``z`` ``[N, *feat]`` and of the species ``[N]``.
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, tuple[torch.Tensor, np.ndarray]] = {}

    def put(self, key: Hashable, z: torch.Tensor, atomic_numbers: Any) -> None:
        """Store ``z`` ``[N, *feat]`` (detached copy) for atoms with species ``atomic_numbers`` ``[N]``."""
        species = _species(atomic_numbers)
        if z.dim() == 0 or z.shape[0] != species.shape[0]:
            raise ValueError(
                f"warm start for key {key!r}: state has {z.shape[0] if z.dim() else 0} rows "
                f"but {species.shape[0]} atomic numbers were given"
            )
        self._entries[key] = (z.detach().clone(), species)

    def get(self, key: Hashable, atomic_numbers: Any, on_mismatch: str = "raise") -> torch.Tensor | None:
        """The stored ``z`` ``[N, *feat]`` for ``key``, or ``None`` when nothing is stored.

        Args:
            key: the entry's key.
            atomic_numbers: species ``[N]`` of the structure about to be evaluated.
            on_mismatch: ``"raise"`` -> :class:`WarmStartMismatch` when the stored entry has a
                different atom count or species; ``"reset"`` -> drop the entry, return ``None``.

        The returned tensor is the stored one (no copy); do not modify it in place.
        """
        if on_mismatch not in ("raise", "reset"):
            raise ValueError(f"on_mismatch must be 'raise' or 'reset', got {on_mismatch!r}")
        entry = self._entries.get(key)
        if entry is None:
            return None
        z, stored = entry
        problem = self._mismatch(stored, _species(atomic_numbers))
        if problem is None:
            return z
        if on_mismatch == "reset":
            del self._entries[key]
            return None
        raise WarmStartMismatch(f"warm start for key {key!r} does not fit: {problem}")

    @staticmethod
    def _mismatch(stored: np.ndarray, given: np.ndarray) -> str | None:
        if stored.shape[0] != given.shape[0]:
            return f"stored entry has {stored.shape[0]} atoms, the structure has {given.shape[0]}"
        differ = np.nonzero(stored != given)[0]
        if differ.size == 0:
            return None
        shown = differ[:_SHOWN]
        more = f" (and {differ.size - _SHOWN} more)" if differ.size > _SHOWN else ""
        detail = ", ".join(f"atom {i}: stored Z={stored[i]}, now Z={given[i]}" for i in shown)
        return f"species differ at {differ.size} atom(s): {detail}{more}"

    def reset(self, key: Hashable | None = None) -> None:
        """Drop the entry for ``key`` (no error if absent), or every entry when ``key`` is ``None``."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)

    def state_dict(self) -> dict[str, list]:
        """Entries as plain lists of tensors (``torch.load(weights_only=True)``-safe)."""
        keys = list(self._entries)
        return {"keys": keys, "states": [self._entries[k][0] for k in keys],
                "species": [torch.from_numpy(self._entries[k][1]) for k in keys]}

    def load_state_dict(self, state: dict[str, list]) -> None:
        """Replace all entries by those of :meth:`state_dict`'s output."""
        self._entries = {k: (z.clone(), _species(s)) for k, z, s in zip(state["keys"], state["states"], state["species"])}

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
