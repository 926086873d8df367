"""Render the node-neighbour representation as a fixed-size RGB image.

Image design (default 32 x 32, ``slots = 8``)
---------------------------------------------
* Each atom becomes a *record*: a horizontal strip of ``slots`` pixels.
  Pixel 0 is the atom itself (its element colour at full intensity); pixels
  1..slots-1 are its neighbours in canonical order (nearest first, see
  :mod:`.bond_graph`), each drawn in the neighbour's element colour scaled by
  ``intensity(d) = 1 - (1 - min_intensity) * min(d / cutoff, 1)`` — a close
  neighbour is bright, one at the cutoff is dimmed to ``min_intensity`` (0.3).
  Neighbours beyond ``slots - 1`` (the farthest) are dropped; unused pixels are
  black, and black is never an element colour.
* Records are laid out row-major, ``W // slots`` records per image row, atoms in
  canonical order (heaviest element first), so the image holds
  ``capacity = H * (W // slots)`` atoms. With ``slots == W`` it is exactly
  "row = atom, column = neighbour slot".
* The N canonical records are resized deterministically to exactly
  ``capacity`` strips. More atoms than ``capacity``: record ``i`` goes to bin
  ``floor(i * capacity / N)`` and each bin shows the pixel-wise mean of its
  records. Fewer atoms, ``fill="stretch"`` (default): strip ``k`` repeats record
  ``floor(k * N / capacity)``, so every atom covers about ``capacity / N`` strips
  and the image is full whatever the size (and a k-fold supercell of a crystal
  gives the image of its cell whenever both N divide ``capacity``);
  ``fill="pad"`` instead leaves the trailing strips black (the atom count stays
  visible).
* Pixel values are computed in float64 and rounded once to uint8, from quantised
  distances only, so the same structure — in any atom order, orientation or
  translation — gives bitwise the same image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from .bond_graph import BondGraph, NodeNeighbourGraph, node_neighbour_graph
from .palette import element_colours, palette_table
from ..rundir import atomic_output, write_json

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class RenderConfig:
    """How a node-neighbour graph becomes an image.

    size: (H, W) pixels; slots: pixels per atom record (1 self + slots-1 neighbours);
    min_intensity: brightness factor of a neighbour at the cutoff distance (0..1];
    fill: "stretch" (repeat records to fill the image) or "pad" (black after the last atom).
    """

    size: tuple[int, int] = (32, 32)
    slots: int = 8
    min_intensity: float = 0.3
    fill: str = "stretch"

    def __post_init__(self) -> None:
        size = (self.size, self.size) if isinstance(self.size, int) else tuple(int(s) for s in self.size)
        object.__setattr__(self, "size", size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive int or (H, W), got {self.size}")
        if not 2 <= self.slots <= size[1]:
            raise ValueError(f"slots must be in [2, W={size[1]}], got {self.slots}")
        if not 0.0 < self.min_intensity <= 1.0:
            raise ValueError(f"min_intensity must be in (0, 1], got {self.min_intensity}")
        if self.fill not in ("stretch", "pad"):
            raise ValueError(f"fill must be 'stretch' or 'pad', got {self.fill!r}")

    @property
    def records_per_row(self) -> int:
        return self.size[1] // self.slots

    @property
    def capacity(self) -> int:
        """Number of atom records the image holds before resizing kicks in."""
        return self.size[0] * self.records_per_row

    def to_dict(self) -> dict:
        return {"size": list(self.size), "slots": self.slots, "min_intensity": self.min_intensity,
                "fill": self.fill}


def as_render_config(config: RenderConfig | dict | int | None) -> RenderConfig:
    if config is None:
        return RenderConfig()
    if isinstance(config, RenderConfig):
        return config
    if isinstance(config, int):
        return RenderConfig(size=(config, config))
    if isinstance(config, dict):
        return RenderConfig(**{k: (tuple(v) if k == "size" and not isinstance(v, int) else v)
                               for k, v in config.items()})
    raise TypeError(f"expected RenderConfig, dict, int or None, got {type(config).__name__}")


def distance_intensity(distance: np.ndarray, cutoff: float, min_intensity: float = 0.3) -> np.ndarray:
    """Brightness factor of a neighbour at ``distance`` (Angstrom): 1 at 0, ``min_intensity`` at the cutoff."""
    frac = np.clip(np.asarray(distance, dtype=np.float64) / float(cutoff), 0.0, 1.0)
    return 1.0 - (1.0 - min_intensity) * frac


def record_pixels(graph: NodeNeighbourGraph, config: RenderConfig) -> np.ndarray:
    """Float64 pixel strips of all atoms, shape [N, slots, 3], values 0..255."""
    colours = element_colours().astype(np.float64)
    z, nz, nd = graph.as_arrays(config.slots - 1)
    strips = np.zeros((len(z), config.slots, 3), dtype=np.float64)
    strips[:, 0] = colours[z]
    present = nz > 0
    factor = np.where(present, distance_intensity(np.nan_to_num(nd), graph.cutoff, config.min_intensity), 0.0)
    strips[:, 1:] = colours[nz] * factor[..., None]
    return strips


def render_graph(graph: NodeNeighbourGraph, config: RenderConfig | dict | int | None = None) -> np.ndarray:
    """Image of a node-neighbour graph: uint8 array [H, W, 3] (see the module docstring)."""
    config = as_render_config(config)
    strips = record_pixels(graph, config)
    n, cap = len(strips), config.capacity
    if n > cap:
        bins = (np.arange(n) * cap) // n
        sums = np.zeros((cap, config.slots, 3), dtype=np.float64)
        np.add.at(sums, bins, strips)
        strips = sums / np.bincount(bins, minlength=cap)[:, None, None]
    elif n < cap and config.fill == "stretch":
        strips = strips[(np.arange(cap) * n) // cap]
    h, w = config.size
    per_row = config.records_per_row
    image = np.zeros((h, w, 3), dtype=np.uint8)
    pixels = np.clip(np.rint(strips), 0, 255).astype(np.uint8)
    for k in range(len(pixels)):
        row, col = divmod(k, per_row)
        image[row, col * config.slots:(col + 1) * config.slots] = pixels[k]
    return image


def render_structure(
    structure: Atoms | BondGraph | NodeNeighbourGraph,
    cutoff: float | None = None,
    config: RenderConfig | dict | int | None = None,
) -> np.ndarray:
    """Structure -> uint8 image [H, W, 3].

    ``cutoff`` (Angstrom) defaults to 2.0 for molecules and 3.4 for periodic structures.
    """
    graph = structure if isinstance(structure, NodeNeighbourGraph) else node_neighbour_graph(structure, cutoff)
    return render_graph(graph, config)


def image_to_tensor(image: np.ndarray) -> "torch.Tensor":
    """uint8 image [H, W, 3] (or a batch [n, H, W, 3]) -> float32 tensor [3, H, W] ([n, 3, H, W]) in [0, 1]."""
    import torch

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
        raise ValueError(f"expected uint8 [H, W, 3] or [n, H, W, 3], got {image.dtype} {image.shape}")
    t = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32) / 255.0
    return t.movedim(-1, -3).contiguous()


def render_structure_tensor(
    structure: Atoms | BondGraph | NodeNeighbourGraph,
    cutoff: float | None = None,
    config: RenderConfig | dict | int | None = None,
) -> "torch.Tensor":
    """Structure -> float32 tensor [3, H, W] in [0, 1] (``render_structure`` / 255)."""
    return image_to_tensor(render_structure(structure, cutoff, config))


def legend_dict(
    elements: Sequence[int] | None = None,
    config: RenderConfig | dict | int | None = None,
    cutoff: float | None = None,
) -> dict:
    """JSON-ready description of the palette and the image layout."""
    config = as_render_config(config)
    return {
        "palette": palette_table(None if elements is None else list(elements)),
        "empty_pixel_rgb": [0, 0, 0],
        "render_config": config.to_dict(),
        "cutoff_angstrom": cutoff,
        "layout": (
            f"each atom is a strip of {config.slots} pixels: pixel 0 = the atom's element colour, "
            f"pixels 1..{config.slots - 1} = neighbours sorted by (distance, Z), "
            f"{config.records_per_row} strips per image row, atoms sorted by (-Z, neighbour signature); "
            f"more than {config.capacity} atoms are averaged into {config.capacity} strips; "
            + ("fewer atoms are repeated to fill all strips" if config.fill == "stretch"
               else "fewer atoms leave black strips at the end")
        ),
        "intensity": (
            f"neighbour pixel = element colour * (1 - {1 - config.min_intensity:.3g} * min(d / cutoff, 1))"
        ),
    }


def save_legend(
    path: str | Path,
    elements: Sequence[int] | None = None,
    config: RenderConfig | dict | int | None = None,
    cutoff: float | None = None,
) -> tuple[Path, Path]:
    """Write the colour legend as ``<path>.png`` (matplotlib swatches) and ``<path>.json``.

    ``path`` may carry a ``.png``/``.json`` suffix or none; ``elements`` restricts the
    legend to those atomic numbers (default all 1..118). Returns (png_path, json_path).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() in (".png", ".json"):
        path = path.with_suffix("")
    png_path, json_path = path.with_name(path.name + ".png"), path.with_name(path.name + ".json")
    info = legend_dict(elements, config, cutoff)
    rows = info["palette"]
    ncols = 12 if len(rows) > 24 else max(1, min(len(rows), 6))
    nrows = (len(rows) + ncols - 1) // ncols
    fig, ax = plt.subplots(figsize=(0.8 * ncols + 0.4, 0.55 * nrows + 1.0))
    for k, row in enumerate(rows):
        r, c = divmod(k, ncols)
        rgb = np.asarray(row["rgb"]) / 255.0
        ax.add_patch(plt.Rectangle((c, -r - 1), 0.95, 0.9, color=rgb))
        ax.text(c + 0.475, -r - 0.55, row["symbol"], ha="center", va="center", fontsize=8,
                color="black" if rgb @ np.array([0.299, 0.587, 0.114]) > 0.5 else "white")
    ax.set_xlim(0, ncols)
    ax.set_ylim(-nrows - 0.1, 0)
    ax.set_axis_off()
    ax.set_title("element colours (neighbour pixels dimmed with distance; black = empty)", fontsize=8)
    fig.tight_layout()
    with atomic_output(png_path) as tmp:
        fig.savefig(str(tmp), dpi=100, format="png")
    plt.close(fig)
    write_json(json_path, info)
    return png_path, json_path


def elements_in(structures: Sequence[Atoms]) -> list[int]:
    """Sorted atomic numbers present in a collection of structures (for a compact legend)."""
    found: set[int] = set()
    for atoms in structures:
        found.update(int(z) for z in np.unique(atoms.numbers))
    return sorted(found)


__all__ = [
    "RenderConfig", "as_render_config", "distance_intensity", "record_pixels", "render_graph", "render_structure",
    "image_to_tensor", "render_structure_tensor", "legend_dict", "save_legend", "elements_in",
]
