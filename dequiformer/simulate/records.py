"""Per-force-call solver bookkeeping and atomically written output files.

ASE dynamics and optimisers call the calculator once per step (plus once for the initial
structure), but nothing in ASE guarantees it; :class:`ForceCallLog` therefore records every
call and the drivers group the calls by step.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, Sequence

from ase.calculators.calculator import Calculator

from ..rundir import atomic_output


class ForceCallLog:
    """Records ``calc.stats`` and the wall time of every calculation of ``calc``.

    Use as a context manager; while active, ``calc.calculate`` is wrapped (on the instance
    only, restored on exit). Each record is ``calc.stats`` (when the calculator has it) plus
    ``ms``, the wall time of the call in milliseconds.
    """

    def __init__(self, calc: Calculator) -> None:
        self.calc = calc
        self.calls: list[dict[str, Any]] = []
        self._taken = 0
        self._installed = False

    def __enter__(self) -> "ForceCallLog":
        original = self.calc.calculate

        def calculate(*args: Any, **kwargs: Any) -> None:
            start = time.perf_counter()
            original(*args, **kwargs)
            ms = (time.perf_counter() - start) * 1e3
            self.calls.append({**dict(getattr(self.calc, "stats", {}) or {}), "ms": ms})

        self.calc.calculate = calculate  # type: ignore[method-assign]
        self._installed = True
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            del self.calc.calculate  # the instance attribute; the class method shows again
            self._installed = False

    def take(self) -> list[dict[str, Any]]:
        """The calls recorded since the previous :meth:`take`."""
        new = self.calls[self._taken:]
        self._taken = len(self.calls)
        return new


def summarise_calls(calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Solver totals of the calls of one step: ``solver_steps`` and ``adjoint_steps`` (sums; the
    adjoint solve of a conservative DEQ, 0 otherwise), ``residual`` (max), ``reused`` (all
    reused), ``converged`` (all converged), ``ms`` (sum), ``calls`` (count).

    A step without a calculation (results cached) has zero steps and time.
    """
    if not calls:
        return {"solver_steps": 0, "adjoint_steps": 0, "residual": float("nan"), "reused": False, "converged": True, "ms": 0.0,
                "calls": 0}
    return {
        "solver_steps": int(sum(int(c.get("solver_steps", 0)) for c in calls)),
        "adjoint_steps": int(sum(int(c.get("adjoint_steps", 0)) for c in calls)),
        "residual": float(max(float(c.get("residual", float("nan"))) for c in calls)),
        "reused": bool(all(c.get("reused", False) for c in calls)),
        "converged": bool(all(c.get("converged", True) for c in calls)),
        "ms": float(sum(c["ms"] for c in calls)),
        "calls": len(calls),
    }


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` (dicts) as CSV with a header of ``columns``, atomically."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return Path(path)


def _csv_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.10g}"
    return "" if value is None else value
