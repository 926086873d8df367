"""Named stages of a force call, for ``torch.profiler`` (``dequiformer bench profile``).

``stage("trunk")`` marks a region as ``dq::trunk`` in a profiler trace; outside a profiler it
costs about 5 microseconds (some ten stages per force call: ~0.1 % of a 21-atom call). The stages of one call, outermost first: ``graph`` (neighbour list and
graph tensors, in the calculator), ``edge_context`` (edge vectors, frames, Wigner blocks, radial
basis), ``embedding`` (atom and edge-degree embedding), ``trunk`` (the block stack, or the
fixed-point solve), ``block`` (one transformer block, inside the trunk), ``heads`` (energy and
force heads) and ``energy_gradient`` (-dE/dpos of conservative models).
"""
from __future__ import annotations

import torch

__all__ = ["PREFIX", "STAGES", "stage"]

PREFIX = "dq::"
STAGES = ("graph", "edge_context", "embedding", "trunk", "block", "heads", "energy_gradient")


def stage(name: str) -> torch.profiler.record_function:
    """Context manager marking ``name`` (one of :data:`STAGES`) in a profiler trace."""
    return torch.profiler.record_function(PREFIX + name)
