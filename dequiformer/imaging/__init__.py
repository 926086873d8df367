"""Structures -> node-neighbour graphs -> RGB "graph images", and labelled image data sets.

The Deep AndersoNN data side: read a structure (:mod:`.structures`), build its bond
graph and canonical node-neighbour representation (:mod:`.bond_graph`), render it
with a fixed element palette (:mod:`.render`, :mod:`.palette`), and assemble
labelled :class:`ImageDataset` objects from public property tables
(:mod:`.datasets`: QMugs, QMOF, band gaps, CIFAR-10). Names are imported lazily so
that rendering does not import torch. Classifiers trained on these images (and on the
structures themselves) live in :mod:`dequiformer.classify`.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "read_structure": "structures",
    "read_structures": "structures",
    "read_sdf": "structures",
    "read_structure_with_tags": "structures",
    "StructureReadError": "structures",
    "BondGraph": "bond_graph",
    "build_bond_graph": "bond_graph",
    "node_neighbour_graph": "bond_graph",
    "NodeNeighbourGraph": "bond_graph",
    "default_cutoff": "bond_graph",
    "element_colours": "palette",
    "element_colour": "palette",
    "RenderConfig": "render",
    "render_structure": "render",
    "render_structure_tensor": "render",
    "render_graph": "render",
    "image_to_tensor": "render",
    "save_legend": "render",
    "ImageDataset": "image_dataset",
    "load_cifar10": "cifar",
    "cifar10_dataset": "cifar",
    "qmugs_dataset": "datasets",
    "qmof_dataset": "datasets",
    "bandgap_dataset": "datasets",
    "build_image_dataset": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
