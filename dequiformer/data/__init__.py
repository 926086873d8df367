"""Atomic graphs, neighbour lists, dataset readers, splits, normalisation, units."""
from .graph import AtomicGraph

__all__ = ["AtomicGraph"]
