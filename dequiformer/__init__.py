"""dequiformer: deep-equilibrium equivariant force fields.

Public entry points (see DESIGN.md "Contracts") are imported lazily so that
``import dequiformer`` stays cheap and optional parts fail only when used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "dequiformer.config",
    "build_model": "dequiformer.models",
    "load_model": "dequiformer.train.checkpoint",
    "AtomicGraph": "dequiformer.data.graph",
    "DEQCalculator": "dequiformer.calculator",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'dequiformer' has no attribute {name!r}")
