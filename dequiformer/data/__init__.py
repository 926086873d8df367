"""Atomic graphs, neighbour lists and dataset readers."""
