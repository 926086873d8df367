"""Labelled graph-image data sets from public property tables.

* QMugs (drug-like molecules): ``summary.csv`` + ``structures/<chembl_id>/<conf_id>.sdf``,
  or the SDF tags alone. Dipoles ``"x|y|z|total"`` in Debye. Binary label
  ``strongly_polar`` (1) when the total dipole >= ``threshold`` (default
  :data:`DEFAULT_DIPOLE_THRESHOLD` = 3.0 D), else ``weakly_polar`` (0).
* QMOF (metal-organic frameworks): ``qmof.csv`` (``qmof_id`` or ``name``,
  ``info.pld``, ``info.lcd``, Angstrom) + ``<qmof_id>.cif`` files; pore-size classes
  from bin edges (default (4, 7) A on the pore-limiting diameter).
* Band gaps (OQMD / JARVIS style): a CSV with an id and a gap column (eV) + one
  structure file per id; classes metal (< 0.1 eV), semiconductor (< 3 eV), insulator.
* CIFAR-10 (python layout), see :mod:`.cifar`.

Every structure goes through :func:`render_structure` with one cutoff and one
:class:`RenderConfig` per data set; both are recorded in the metadata. Molecules
default to 2.0 A and 8-pixel atom records (up to 7 neighbours); periodic
structures to 3.4 A and 16-pixel records (:data:`PERIODIC_RENDER_CONFIG`, up to
15 neighbours, since a 3.4 A sphere in a metal or a MOF node holds 12 or more). Missing
files and columns raise errors that name the file and the column; rows whose
value is empty/``na``/``nan`` are skipped and counted in the metadata.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from ase import Atoms

from .bond_graph import MOLECULE_CUTOFF, PERIODIC_CUTOFF
from .cifar import CIFAR10_CLASSES, cifar10_dataset, load_cifar10
from .image_dataset import ImageDataset
from .render import RenderConfig, as_render_config, render_structure
from .structures import read_sdf, read_structure

DEFAULT_DIPOLE_THRESHOLD = 3.0
"""Debye; QMugs molecules at or above it are labelled strongly polar."""
POLARITY_CLASSES = ("weakly_polar", "strongly_polar")
DEFAULT_PORE_BIN_EDGES = (4.0, 7.0)
"""Angstrom; pore classes [0, 4), [4, 7), [7, inf) of the chosen QMOF column."""
BANDGAP_CLASSES = ("metal", "semiconductor", "insulator")
PERIODIC_RENDER_CONFIG = RenderConfig(size=(32, 32), slots=16)
"""Default image layout of the QMOF and band-gap data sets."""
_MISSING = {"", "na", "n/a", "nan", "none", "null"}


# --------------------------------------------------------------------------- tables
def _resolve_column(path: Path, header: Sequence[str], wanted: str | Sequence[str]) -> str:
    options = [wanted] if isinstance(wanted, str) else list(wanted)
    for name in options:
        if name in header:
            return name
    raise KeyError(f"{path}: missing column {' or '.join(repr(o) for o in options)}; "
                   f"columns present: {list(header)}")


def read_table(path: str | Path, columns: Sequence[str | Sequence[str]]) -> tuple[list[dict[str, str]], list[str]]:
    """Read a CSV; each entry of ``columns`` is a name or a list of alternatives.

    Returns (rows as dicts of raw strings, the resolved column name for each entry).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table not found: {path}")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        resolved = [_resolve_column(path, header, c) for c in columns]
        rows = list(reader)
    return rows, resolved


def parse_float(text: str | None, where: str) -> float | None:
    """Float of a table cell; None for empty/na/nan; ValueError naming ``where`` otherwise."""
    if text is None or text.strip().lower() in _MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: cannot parse {text!r} as a number") from None
    return None if math.isnan(value) else value


def parse_dipole(text: str, where: str = "dipole") -> np.ndarray:
    """QMugs dipole ``"x|y|z|total"`` (Debye) -> float64 [4]; a 3-field ``x|y|z`` gets its norm appended."""
    parts = [p.strip() for p in str(text).strip().split("|")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{where}: dipole {text!r} is not 'x|y|z|total' numbers") from None
    if len(values) == 3:
        values.append(float(np.linalg.norm(values)))
    if len(values) != 4:
        raise ValueError(f"{where}: dipole {text!r} has {len(values)} fields, expected 4 (x|y|z|total)")
    return np.asarray(values, dtype=np.float64)


def polarity_label(total_dipole: float, threshold: float = DEFAULT_DIPOLE_THRESHOLD) -> int:
    """1 (strongly polar) when ``total_dipole >= threshold`` (Debye), else 0."""
    return int(total_dipole >= threshold)


def bin_label(value: float, edges: Sequence[float]) -> int:
    """Index of the bin of ``value``: 0 below edges[0], k for edges[k-1] <= value < edges[k]."""
    return int(np.searchsorted(np.asarray(edges, dtype=np.float64), value, side="right"))


def bin_class_names(edges: Sequence[float], quantity: str = "pld") -> list[str]:
    """Readable names of the bins made by ``edges``, e.g. ``['pld<4', '4<=pld<7', 'pld>=7']``."""
    edges = [float(e) for e in edges]
    if not edges or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bin edges must be a non-empty increasing sequence, got {edges}")
    names = [f"{quantity}<{edges[0]:g}"]
    names += [f"{a:g}<={quantity}<{b:g}" for a, b in zip(edges, edges[1:])]
    return names + [f"{quantity}>={edges[-1]:g}"]


def bandgap_label(gap: float, metal_below: float = 0.1, semiconductor_below: float = 3.0) -> int:
    """0 metal (gap < metal_below eV), 1 semiconductor (< semiconductor_below eV), 2 insulator."""
    if not metal_below <= semiconductor_below:
        raise ValueError(f"need metal_below <= semiconductor_below, got {metal_below}, {semiconductor_below}")
    return 0 if gap < metal_below else (1 if gap < semiconductor_below else 2)


# --------------------------------------------------------------------------- building
def build_image_dataset(
    items: Iterable[tuple[str, Atoms, int]],
    class_names: Sequence[str],
    cutoff: float | None,
    config: RenderConfig | dict | int | None = None,
    metadata: dict | None = None,
    progress: bool = False,
    total: int | None = None,
) -> ImageDataset:
    """Render ``(id, atoms, label)`` items into an :class:`ImageDataset`.

    ``cutoff`` in Angstrom (None: 2.0 for molecules, 3.4 for periodic structures).
    """
    config = as_render_config(config)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, total=total, desc="rendering", unit="structure")
    ids, images, labels = [], [], []
    for ident, atoms, label in items:
        images.append(render_structure(atoms, cutoff, config))
        ids.append(ident)
        labels.append(label)
    h, w = config.size
    stack = np.stack(images) if images else np.zeros((0, h, w, 3), dtype=np.uint8)
    meta = {"cutoff_angstrom": cutoff, "render_config": config.to_dict(), **(metadata or {})}
    return ImageDataset(stack, labels, class_names, ids, meta)


def _limited(it: Iterator, limit: int | None) -> Iterator:
    for k, item in enumerate(it):
        if limit is not None and k >= limit:
            return
        yield item


# --------------------------------------------------------------------------- QMugs
def qmugs_sdf_path(structures_dir: str | Path, chembl_id: str, conf_id: str) -> Path:
    """``structures/<chembl_id>/<conf_id>.sdf``; a numeric conf id ``3`` means ``conf_03``."""
    conf = str(conf_id).strip()
    if conf.isdigit():
        conf = f"conf_{int(conf):02d}"
    return Path(structures_dir) / str(chembl_id).strip() / f"{conf}.sdf"


def read_qmugs_summary(csv_path: str | Path, column: str = "DFT:DIPOLE") -> list[tuple[str, str, np.ndarray | None]]:
    """Rows of QMugs ``summary.csv`` as ``(chembl_id, conf_id, dipole [4] Debye or None)``."""
    rows, (cid, conf, col) = read_table(csv_path, ["chembl_id", "conf_id", column])
    out = []
    for k, row in enumerate(rows):
        text = row[col]
        where = f"{csv_path} row {k + 2} column {col!r}"
        dip = None if text is None or text.strip().lower() in _MISSING else parse_dipole(text, where)
        out.append((row[cid].strip(), row[conf].strip(), dip))
    return out


def qmugs_dataset(
    root: str | Path | None = None,
    *,
    summary_csv: str | Path | None = None,
    structures_dir: str | Path | None = None,
    sdf_files: Sequence[str | Path] | None = None,
    threshold: float = DEFAULT_DIPOLE_THRESHOLD,
    column: str = "DFT:DIPOLE",
    cutoff: float = MOLECULE_CUTOFF,
    config: RenderConfig | dict | int | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    progress: bool = False,
) -> ImageDataset:
    """QMugs polar / non-polar image data set (label 1 when total dipole >= ``threshold`` D).

    Sources, first that applies: ``sdf_files`` (dipoles from each record's ``column``
    tag); ``summary_csv`` (default ``root/summary.csv``) with structures at
    ``structures_dir/<chembl_id>/<conf_id>.sdf`` (default ``root/structures``);
    otherwise every ``*.sdf`` under ``structures_dir``, read with its tags.
    ``skip_missing`` skips rows whose SDF is absent instead of raising.
    """
    root = Path(root) if root is not None else None
    if summary_csv is None and root is not None:
        summary_csv = root / "summary.csv"
    if structures_dir is None and root is not None:
        structures_dir = root / "structures"
    counts = {"skipped_missing_value": 0, "skipped_missing_file": 0}

    def from_sdf(files: Sequence[Path]) -> Iterator[tuple[str, Atoms, int]]:
        for path in files:
            for index, (atoms, tags) in enumerate(read_sdf(path)):
                if column not in tags:
                    raise KeyError(f"{path} record {index}: missing SDF tag {column!r}; "
                                   f"tags present: {sorted(tags)}")
                dip = parse_dipole(tags[column], f"{path} record {index} tag {column!r}")
                ident = f"{tags.get('CHEMBL_ID', path.parent.name)}/{tags.get('CONF_ID', path.stem)}"
                yield ident, atoms, polarity_label(dip[3], threshold)

    def from_summary(csv_path: Path) -> Iterator[tuple[str, Atoms, int]]:
        if structures_dir is None:
            raise ValueError(f"structures_dir is needed to find the SDF files of {csv_path}")
        for chembl_id, conf_id, dip in read_qmugs_summary(csv_path, column):
            if dip is None:
                counts["skipped_missing_value"] += 1
                continue
            sdf = qmugs_sdf_path(structures_dir, chembl_id, conf_id)
            if skip_missing and not sdf.is_file():
                counts["skipped_missing_file"] += 1
                continue
            atoms, _ = read_sdf(sdf)[0]
            yield f"{chembl_id}/{sdf.stem}", atoms, polarity_label(dip[3], threshold)

    if sdf_files is not None:
        source, items = "sdf_tags", from_sdf([Path(p) for p in sdf_files])
    elif summary_csv is not None and Path(summary_csv).is_file():
        source, items = "summary_csv", from_summary(Path(summary_csv))
    elif structures_dir is not None and Path(structures_dir).is_dir():
        files = sorted(Path(structures_dir).rglob("*.sdf"))
        if not files:
            raise FileNotFoundError(f"no *.sdf files under QMugs structures folder {structures_dir}")
        source, items = "sdf_tags", from_sdf(files)
    else:
        raise FileNotFoundError(f"QMugs data not found: neither summary table {summary_csv} "
                                f"nor structures folder {structures_dir} exists")
    meta = {"source": "qmugs", "table_source": source, "dipole_column": column,
            "threshold_debye": threshold, "label_rule": "strongly_polar if total dipole >= threshold",
            "root": str(root) if root else None}
    ds = build_image_dataset(_limited(items, limit), POLARITY_CLASSES, cutoff, config, meta, progress)
    ds.metadata.update(counts)
    return ds


# --------------------------------------------------------------------------- QMOF
def qmof_dataset(
    csv_path: str | Path,
    cif_dir: str | Path | None = None,
    *,
    column: str = "info.pld",
    bin_edges: Sequence[float] = DEFAULT_PORE_BIN_EDGES,
    id_column: str | Sequence[str] = ("qmof_id", "name"),
    cutoff: float = PERIODIC_CUTOFF,
    config: RenderConfig | dict | int | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    progress: bool = False,
) -> ImageDataset:
    """QMOF pore-size classes: ``column`` (``info.pld`` or ``info.lcd``, Angstrom) binned by ``bin_edges``.

    Structures are ``cif_dir/<id>.cif`` (default ``<csv folder>/relaxed_structures``).
    """
    csv_path = Path(csv_path)
    config = PERIODIC_RENDER_CONFIG if config is None else config
    cif_dir = Path(cif_dir) if cif_dir is not None else csv_path.parent / "relaxed_structures"
    rows, (id_col, value_col) = read_table(csv_path, [id_column, column])
    class_names = bin_class_names(bin_edges, column.split(".")[-1])
    counts = {"skipped_missing_value": 0, "skipped_missing_file": 0}

    def items() -> Iterator[tuple[str, Atoms, int]]:
        for k, row in enumerate(rows):
            value = parse_float(row[value_col], f"{csv_path} row {k + 2} column {value_col!r}")
            ident = row[id_col].strip()
            if value is None:
                counts["skipped_missing_value"] += 1
                continue
            cif = cif_dir / f"{ident}.cif"
            if skip_missing and not cif.is_file():
                counts["skipped_missing_file"] += 1
                continue
            yield ident, read_structure(cif), bin_label(value, bin_edges)

    meta = {"source": "qmof", "table": str(csv_path), "structures": str(cif_dir), "column": value_col,
            "bin_edges_angstrom": [float(e) for e in bin_edges]}
    ds = build_image_dataset(_limited(items(), limit), class_names, cutoff, config, meta, progress,
                             total=len(rows) if limit is None else min(limit, len(rows)))
    ds.metadata.update(counts)
    return ds


# --------------------------------------------------------------------------- band gaps
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".xyz", ".extxyz", ".pdb")


def _find_structure(folder: Path, ident: str, pattern: str | None) -> Path:
    if pattern is not None:
        return folder / pattern.format(id=ident)
    candidates = [folder / f"{ident}{s}" for s in STRUCTURE_SUFFIXES] + [folder / ident / "POSCAR"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no structure file for id {ident!r} in {folder} "
                            f"(tried {', '.join(c.name for c in candidates[:-1])}, {ident}/POSCAR)")


def bandgap_dataset(
    csv_path: str | Path,
    structure_dir: str | Path | None = None,
    *,
    id_column: str | Sequence[str] = ("id", "jid", "entry_id", "material_id"),
    gap_column: str | Sequence[str] = ("band_gap", "optb88vdw_bandgap", "gap"),
    metal_below: float = 0.1,
    semiconductor_below: float = 3.0,
    structure_pattern: str | None = None,
    structure_format: str | None = None,
    cutoff: float = PERIODIC_CUTOFF,
    config: RenderConfig | dict | int | None = None,
    limit: int | None = None,
    skip_missing: bool = False,
    progress: bool = False,
) -> ImageDataset:
    """Metal / semiconductor / insulator classes from a band-gap table (gaps in eV).

    ``structure_pattern`` (e.g. ``"{id}.cif"``) names each structure file inside
    ``structure_dir`` (default: the CSV's folder); without it ``<id>.cif``,
    ``.vasp``, ``.poscar``, ``.xyz``, ``.extxyz``, ``.pdb`` and ``<id>/POSCAR`` are tried.
    """
    csv_path = Path(csv_path)
    config = PERIODIC_RENDER_CONFIG if config is None else config
    folder = Path(structure_dir) if structure_dir is not None else csv_path.parent
    rows, (id_col, gap_col) = read_table(csv_path, [id_column, gap_column])
    bandgap_label(0.0, metal_below, semiconductor_below)  # validates the thresholds
    counts = {"skipped_missing_value": 0, "skipped_missing_file": 0}

    def items() -> Iterator[tuple[str, Atoms, int]]:
        for k, row in enumerate(rows):
            gap = parse_float(row[gap_col], f"{csv_path} row {k + 2} column {gap_col!r}")
            ident = row[id_col].strip()
            if gap is None:
                counts["skipped_missing_value"] += 1
                continue
            try:
                path = _find_structure(folder, ident, structure_pattern)
                atoms = read_structure(path, format=structure_format)
            except FileNotFoundError:
                if skip_missing:
                    counts["skipped_missing_file"] += 1
                    continue
                raise
            yield ident, atoms, bandgap_label(gap, metal_below, semiconductor_below)

    meta = {"source": "bandgap", "table": str(csv_path), "structures": str(folder), "gap_column": gap_col,
            "thresholds_ev": {"metal_below": metal_below, "semiconductor_below": semiconductor_below}}
    ds = build_image_dataset(_limited(items(), limit), BANDGAP_CLASSES, cutoff, config, meta, progress,
                             total=len(rows) if limit is None else min(limit, len(rows)))
    ds.metadata.update(counts)
    return ds


__all__ = [
    "ImageDataset", "build_image_dataset", "read_table", "parse_float", "parse_dipole",
    "polarity_label", "bin_label", "bin_class_names", "bandgap_label",
    "read_qmugs_summary", "qmugs_sdf_path", "qmugs_dataset", "qmof_dataset", "bandgap_dataset",
    "load_cifar10", "cifar10_dataset", "CIFAR10_CLASSES", "POLARITY_CLASSES", "BANDGAP_CLASSES",
    "DEFAULT_DIPOLE_THRESHOLD", "DEFAULT_PORE_BIN_EDGES", "PERIODIC_RENDER_CONFIG",
]
