"""dequiformer: deep-equilibrium equivariant force fields.

Public entry points (see DESIGN.md "Contracts") are imported lazily so that
``import dequiformer`` stays cheap and optional parts fail only when used.
"""
from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_config": "dequiformer.config",
    "build_model": "dequiformer.models",
    "load_model": "dequiformer.train.checkpoint",
    "AtomicGraph": "dequiformer.data.graph",
    "DEQCalculator": "dequiformer.calculator",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
