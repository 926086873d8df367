"""Simulations driven by :class:`~dequiformer.calculator.DEQCalculator`.

Shared logic behind ``md_runs/`` and the ``dequiformer md``, ``markov`` and ``relax-bench``
commands: start structures from data set files (:mod:`.structures`), per-force-call solver
bookkeeping and atomic output files (:mod:`.records`), molecular dynamics (:mod:`.md`),
geometry optimisation (:mod:`.relax`), the warm-start Markov check (:mod:`.markov`) and the
relaxation benchmark (:mod:`.relax_bench`). Names are imported lazily, so the command-line
parsers (:mod:`.options`) load without torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ForceCallLog": "records", "atomic_output": "records", "write_csv": "records",
    "MDResult": "md", "init_velocities": "md", "run_md": "md",
    "OPTIMIZERS": "relax", "RelaxResult": "relax", "run_relaxation": "relax",
    "load_structure": "structures", "open_dataset": "structures",
    "markov_check": "markov", "run_relax_bench": "relax_bench", "write_report": "relax_bench",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
