"""Fixed element colours for graph images (Z = 1..118).

Design
------
* Common elements (the organic set, halogens, alkali/alkaline-earth metals, the
  3d transition metals and the metals most frequent in MOFs and inorganic
  crystals) get hand-picked colours. The organic ones follow the familiar CPK/Jmol
  conventions (H white, C grey, N blue, O red, S yellow, ...); the metals were
  picked to be mutually distinct rather than the many similar greys of CPK.
* Every other element gets a deterministic colour from the golden-angle hue
  sequence: ``hue = frac(Z * 0.618034)``, saturation in {0.55, 0.75, 0.95} and
  value in {0.70, 0.85, 1.00} chosen by ``Z mod 3``; the HSV colour is converted
  to RGB and rounded to uint8.
* No element colour is black: pure black ``(0, 0, 0)`` means "empty pixel" in the
  images. All 118 colours are distinct (checked in the tests).

The palette is a pure function of Z, so it never changes between runs, machines
or data sets; :func:`palette_table` exports it (for the JSON legend).
"""
from __future__ import annotations

import colorsys
from functools import lru_cache

import numpy as np
from ase.data import chemical_symbols

MAX_Z = 118

# Hand-picked RGB (0..255) for common elements, keyed by symbol.
_HAND_PICKED: dict[str, tuple[int, int, int]] = {
    "H": (255, 255, 255),
    "He": (217, 255, 255),
    "Li": (204, 128, 255),
    "Be": (194, 255, 0),
    "B": (255, 181, 181),
    "C": (144, 144, 144),
    "N": (48, 80, 248),
    "O": (255, 13, 13),
    "F": (144, 224, 80),
    "Ne": (179, 227, 245),
    "Na": (171, 92, 242),
    "Mg": (138, 255, 0),
    "Al": (191, 166, 166),
    "Si": (240, 200, 160),
    "P": (255, 128, 0),
    "S": (255, 255, 48),
    "Cl": (31, 240, 31),
    "Ar": (128, 209, 227),
    "K": (143, 64, 212),
    "Ca": (61, 255, 0),
    "Sc": (230, 230, 230),
    "Ti": (100, 110, 200),
    "V": (200, 60, 170),
    "Cr": (138, 153, 199),
    "Mn": (156, 122, 199),
    "Fe": (224, 102, 51),
    "Co": (240, 144, 160),
    "Ni": (80, 208, 80),
    "Cu": (200, 128, 51),
    "Zn": (125, 128, 176),
    "Ga": (194, 143, 143),
    "Ge": (102, 143, 143),
    "As": (189, 128, 227),
    "Se": (255, 161, 0),
    "Br": (166, 41, 41),
    "Rb": (112, 46, 176),
    "Sr": (0, 255, 180),
    "Y": (148, 255, 255),
    "Zr": (148, 224, 224),
    "Nb": (115, 194, 201),
    "Mo": (84, 181, 181),
    "Ru": (36, 143, 143),
    "Rh": (10, 125, 140),
    "Pd": (0, 105, 133),
    "Ag": (192, 192, 192),
    "Cd": (255, 217, 143),
    "In": (166, 117, 115),
    "Sn": (102, 128, 128),
    "Sb": (158, 99, 181),
    "Te": (212, 122, 0),
    "I": (148, 0, 148),
    "Cs": (87, 23, 143),
    "Ba": (0, 201, 0),
    "La": (112, 212, 255),
    "Hf": (77, 194, 255),
    "Ta": (77, 166, 255),
    "W": (33, 148, 214),
    "Pt": (208, 208, 224),
    "Au": (255, 209, 35),
    "Hg": (184, 184, 208),
    "Pb": (87, 89, 97),
    "Bi": (158, 79, 181),
    "U": (0, 143, 255),
}


def _generated_colour(z: int) -> tuple[int, int, int]:
    hue = (z * 0.6180339887498949) % 1.0
    saturation = (0.55, 0.75, 0.95)[z % 3]
    value = (0.70, 0.85, 1.00)[(z // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


@lru_cache(maxsize=1)
def element_colours() -> np.ndarray:
    """Colour table, uint8 array of shape [119, 3]; row Z is element Z (row 0 is black).

    Read-only: the returned array is shared, copy before modifying.
    """
    table = np.zeros((MAX_Z + 1, 3), dtype=np.uint8)
    for z in range(1, MAX_Z + 1):
        symbol = chemical_symbols[z]
        table[z] = _HAND_PICKED.get(symbol, _generated_colour(z))
    table.setflags(write=False)
    return table


def element_colour(z: int) -> tuple[int, int, int]:
    """RGB colour (uint8 values) of element ``z`` (1..118)."""
    if not 1 <= int(z) <= MAX_Z:
        raise ValueError(f"atomic number {z} outside the palette range 1..{MAX_Z}")
    r, g, b = element_colours()[int(z)]
    return int(r), int(g), int(b)


def is_hand_picked(z: int) -> bool:
    """True when element ``z`` has a hand-picked (not generated) colour."""
    return chemical_symbols[int(z)] in _HAND_PICKED


def palette_table(elements: list[int] | None = None) -> list[dict]:
    """The palette as JSON-ready rows ``{"Z", "symbol", "rgb", "hex", "hand_picked"}``."""
    zs = range(1, MAX_Z + 1) if elements is None else sorted({int(z) for z in elements})
    rows = []
    for z in zs:
        rgb = element_colour(z)
        rows.append({
            "Z": z,
            "symbol": chemical_symbols[z],
            "rgb": list(rgb),
            "hex": "#%02x%02x%02x" % rgb,
            "hand_picked": is_hand_picked(z),
        })
    return rows
