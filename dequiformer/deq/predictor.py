"""Fixed-point prediction along a trajectory: extrapolate the next start from the last few.

Along an MD trajectory the fixed point is a smooth function of time, so polynomial
extrapolation from the last ``k`` fixed points (``k`` = 2: ``2 z_n - z_{n-1}``; 3:
``3 z_n - 3 z_{n-1} + z_{n-2}``) starts the next solve far closer than the last fixed point
alone, as always-stable predictors do for polarisable force fields (short histories only:
longer polynomial extrapolations amplify noise and become unstable).

The guard needs no extra layer evaluation: the same coefficients are applied to the
coordinates the states belong to. When they do not predict the new coordinates well (a jump,
an optimiser's line search, a restart) the state extrapolation would not either, and the next
lower order is tried, down to the last state itself, which is exactly plain reuse. A history
is dropped when the labels of its rows change (e.g. atomic numbers: another structure) or, with
``max_jump``, when a row moved further than that since the last state (another configuration
of the same atoms, whose old state would be a poor start for a loose solve). The predictor
knows nothing about chemistry: states, coordinates and labels are just tensors.
"""
from __future__ import annotations

from collections import deque

import torch

__all__ = ["EXTRAPOLATION", "FixedPointPredictor", "fixed_point_motion"]

#: polynomial extrapolation coefficients for the states ``(x_n, x_{n-1}, ...)`` by history length
EXTRAPOLATION: dict[int, tuple[float, ...]] = {1: (1.0,), 2: (2.0, -1.0), 3: (3.0, -3.0, 1.0)}


class FixedPointPredictor:
    """Keeps the last ``history`` states (any named tensors, e.g. a fixed point and an adjoint)
    with their coordinates, and predicts the states at new coordinates.

    Args:
        history: states kept, 1-3 (1: plain reuse of the last state).
        max_position_error: an order is used only if it predicts the new coordinates to within
            this fraction of the distance moved since the last state (0.5 by default).
        max_jump: no prediction (and the history is dropped) when any row of the coordinates
            moved further than this (Euclidean, coordinate units) since the last state; ``None``:
            no limit.
    """

    def __init__(self, history: int = 3, max_position_error: float = 0.5, max_jump: float | None = None) -> None:
        if history not in EXTRAPOLATION:
            raise ValueError(f"predictor history must be one of {sorted(EXTRAPOLATION)}, got {history!r}")
        if max_position_error <= 0:
            raise ValueError(f"max_position_error must be > 0, got {max_position_error}")
        if max_jump is not None and not max_jump > 0:
            raise ValueError(f"max_jump must be > 0 or None, got {max_jump}")
        self.history = int(history)
        self.max_position_error = float(max_position_error)
        self.max_jump = None if max_jump is None else float(max_jump)
        self._labels: torch.Tensor | None = None
        self._coords: deque[torch.Tensor] = deque(maxlen=self.history)
        self._states: deque[dict[str, torch.Tensor]] = deque(maxlen=self.history)
        self.last_order = 0

    def __len__(self) -> int:
        return len(self._states)

    def reset(self) -> None:
        """Forget the history (new system, changed atoms)."""
        self._coords.clear()
        self._states.clear()
        self._labels = None
        self.last_order = 0

    def _labels_match(self, labels: torch.Tensor) -> bool:
        """Whether ``labels`` are those the history was recorded with."""
        return self._labels is not None and torch.equal(torch.as_tensor(labels).detach().cpu().long(), self._labels)

    def _fits(self, coords: torch.Tensor, labels: torch.Tensor | None) -> bool:
        """Whether the history belongs to these rows: same shape, same labels (when given), and
        no row further than ``max_jump`` from the last recorded coordinates."""
        if not self._coords or coords.shape != self._coords[0].shape:
            return False
        if labels is not None and not self._labels_match(labels):
            return False
        if self.max_jump is not None and coords.numel():
            jump = torch.linalg.vector_norm((coords - self._coords[0]).reshape(coords.shape[0], -1), dim=1).max()
            if float(jump) > self.max_jump:
                return False
        return True

    def record(self, coords: torch.Tensor, labels: torch.Tensor | None = None, **states: torch.Tensor | None) -> None:
        """Append the converged states at ``coords`` (detached copies; ``None`` states are skipped).

        ``labels`` (``[N]`` integers, e.g. atomic numbers) tie the history to its rows. A history
        whose shapes or labels differ from the new entry's is dropped first."""
        coords = coords.detach().to(torch.float64).clone()
        labels = None if labels is None else torch.as_tensor(labels).detach().cpu().long().clone()
        if self._coords and (self._coords[-1].shape != coords.shape
                             or (labels is not None and not self._labels_match(labels))):
            self.reset()
        self._labels = labels
        self._coords.appendleft(coords)
        self._states.appendleft({k: v.detach().clone() for k, v in states.items() if v is not None})

    def latest(self, name: str) -> torch.Tensor | None:
        """The most recently recorded state ``name`` (``None`` with no history or no such state)."""
        return self._states[0].get(name) if self._states else None

    def order_for(self, coords: torch.Tensor, labels: torch.Tensor | None = None) -> int:
        """The highest history length whose extrapolation of the coordinates passes the guard
        (0 with no history, or one that does not fit the rows: see the class docstring)."""
        coords = coords.detach().to(torch.float64)
        if not self._fits(coords, labels):
            return 0
        moved = torch.linalg.vector_norm(coords - self._coords[0])
        for order in range(len(self._coords), 1, -1):
            guess = sum(c * x for c, x in zip(EXTRAPOLATION[order], self._coords))
            if torch.linalg.vector_norm(coords - guess) <= self.max_position_error * moved:
                return order
        return 1

    def predict(self, coords: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Predicted states at ``coords`` (empty with no usable history, which is then dropped);
        ``last_order`` says which extrapolation was used (1: the last states themselves)."""
        order = self.order_for(coords, labels)
        self.last_order = order
        if order == 0:
            if self._coords:
                self.reset()
            return {}
        coefficients = EXTRAPOLATION[order]
        names = set.intersection(*(set(s) for s in list(self._states)[:order]))
        return {name: sum(c * s[name] for c, s in zip(coefficients, self._states)) for name in names}


def fixed_point_motion(z: torch.Tensor, start: torch.Tensor | None,
                       previous: torch.Tensor | None) -> dict[str, float]:
    """How far a warm-started solve had to go, relative to the size of its solution ``z``.

    ``start_error``: ``||z0 - z|| / ||z||`` for the predicted start ``z0`` (absent for a cold
    solve); ``fixed_point_motion``: ``||z - z_prev|| / ||z||`` against the last recorded state
    (absent without one or when shapes differ). A predictor that works keeps the first well below
    the second; a layer whose fixed point moves a lot per step needs more steps however it is
    started. Norms over all entries (Frobenius)."""
    out: dict[str, float] = {}
    size = float(torch.linalg.vector_norm(z.detach()))
    if size == 0.0:
        return out
    for key, other in (("start_error", start), ("fixed_point_motion", previous)):
        if other is not None and other.shape == z.shape:
            out[key] = float(torch.linalg.vector_norm(z.detach() - other.to(z.dtype))) / size
    return out
