"""Train / test splits of the classifiers' data: graph images and labelled 3D structures.

Both routes split by :func:`split_indices`, so a structure file written in the order of an
image set (``datasets/generate_dipole_images.py`` writes both) gives both routes the same
test molecules.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ..data.graph import AtomicGraph
from ..imaging.image_dataset import ImageDataset
from ..schema import resolve_section
from .config import IMAGE_DATA_SCHEMA, STRUCTURE_DATA_SCHEMA

__all__ = ["SPLITS", "ImageSplits", "StructureSplits", "group_names", "load_image_splits", "load_structure_splits",
           "read_labelled_structures", "split_indices"]

SPLITS = ("test", "train", "all")


def split_indices(n: int, test_fraction: float, split_seed: int,
                  groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` row indices of a random split of ``n`` samples.

    ``round(test_fraction * n)`` test rows (at least one and at most ``n - 1`` when
    ``test_fraction > 0`` and ``n > 1``) drawn by ``numpy.random.default_rng(split_seed)``.
    With ``groups`` (one name per sample) whole groups go to one side: groups in a seeded order
    join the test set until it holds ``round(test_fraction * n)`` samples or more (at least one
    group on each side when there are two or more), so that near-duplicates of one compound never
    score a model on what it trained on.
    """
    n_test = int(round(float(test_fraction) * n))
    if float(test_fraction) > 0 and n > 1:
        n_test = min(max(n_test, 1), n - 1)
    rng = np.random.default_rng(int(split_seed))
    if groups is None:
        order = rng.permutation(n)
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group names for {n} samples")
    names, member = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    sizes = np.bincount(member, minlength=len(names))
    test_groups: list[int] = []
    count = 0
    for g in rng.permutation(len(names)).tolist():
        if count >= n_test or len(test_groups) == len(names) - 1:
            break
        test_groups.append(g)
        count += int(sizes[g])
    is_test = np.isin(member, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def group_names(ids: Sequence[str], pattern: str | None) -> list[str] | None:
    """The split group of each id: the first match of the regular expression ``pattern``
    (``data.split_group``; its first parenthesised group when it has one), None without a
    pattern. An id it does not match is an error naming it."""
    if pattern is None:
        return None
    import re

    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"data.split_group: {pattern!r} is not a regular expression ({exc})") from None
    out = []
    for i, sid in enumerate(ids):
        m = regex.search(str(sid))
        if m is None:
            raise ValueError(f"data.split_group: {pattern!r} does not match the id {sid!r} of sample {i}")
        out.append(m.group(1) if regex.groups else m.group(0))
    return out


def _select(split: str, train: tuple[Any, torch.Tensor, list[str]], test: tuple[Any, torch.Tensor, list[str]],
            join: Callable[[Any, Any], Any]) -> tuple[Any, torch.Tensor, list[str]]:
    if split == "train":
        return train
    if split == "test":
        return test
    if split == "all":  # train then test
        return join(train[0], test[0]), torch.cat([train[1], test[1]]), train[2] + test[2]
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


# --------------------------------------------------------------------------- images
@dataclass
class ImageSplits:
    """uint8 images ``[n, C, H, W]`` + int64 labels ``[n]`` + ids of both splits."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    train_ids: list[str]
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_ids: list[str]
    class_names: list[str]
    source: str

    @property
    def image_size(self) -> list[int]:
        """``[H, W]`` in pixels."""
        return [int(self.train_x.shape[2]), int(self.train_x.shape[3])]

    def select(self, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """``(images [n, C, H, W], labels [n], ids)`` of ``split`` (``test``, ``train`` or ``all``)."""
        return _select(split, (self.train_x, self.train_y, self.train_ids), (self.test_x, self.test_y, self.test_ids),
                       lambda a, b: torch.cat([a, b]))


def _to_chw(ds: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(ds.images.transpose(0, 3, 1, 2))), torch.from_numpy(ds.labels.copy())


def _image_sets(path: Path, fmt: str, data_cfg: Mapping[str, Any]) -> tuple[ImageDataset, ImageDataset, str]:
    """``(train, test, format)``: CIFAR-10's own batches, or a seeded split of an ``.npz``."""
    if fmt == "auto":
        fmt = "cifar10" if path.is_dir() else "npz"
    if fmt == "cifar10":
        from ..imaging.cifar import cifar10_dataset

        return cifar10_dataset(path, train=True), cifar10_dataset(path, train=False), fmt
    if path.is_dir():
        raise ValueError(f"data.path: {path} is a folder but data.format is 'npz'")
    full = ImageDataset.load(path)
    groups = group_names([str(i) for i in full.ids], data_cfg["split_group"])
    train_idx, test_idx = split_indices(len(full), float(data_cfg["test_fraction"]), int(data_cfg["split_seed"]),
                                        groups)
    return full.subset(train_idx), full.subset(test_idx), fmt


def load_image_splits(data_cfg: Mapping[str, Any]) -> ImageSplits:
    """Train / test splits of the image route's ``data`` section (see ``IMAGE_DATA_SCHEMA``):
    an :class:`ImageDataset` ``.npz`` split by ``test_fraction`` / ``split_seed``, or a
    ``cifar-10-batches-py`` folder (its own train / test batches)."""
    d = resolve_section("data", data_cfg, IMAGE_DATA_SCHEMA)
    if not d["path"]:
        raise ValueError("data.path is not set: give an ImageDataset .npz file or a cifar-10-batches-py folder "
                         "(e.g. --set data.path=data/dipole_images/images.npz)")
    path = Path(d["path"]).expanduser()
    if not path.exists():
        expected = "a cifar-10-batches-py folder" if d["format"] == "cifar10" else "an ImageDataset .npz file"
        raise FileNotFoundError(f"data.path: {path} does not exist (expected {expected})")
    train, test, fmt = _image_sets(path, d["format"], d)
    if d["limit"] is not None:
        train = train.subset(np.arange(min(int(d["limit"]), len(train))))
    if d["test_limit"] is not None:
        test = test.subset(np.arange(min(int(d["test_limit"]), len(test))))
    if len(train) == 0:
        raise ValueError(f"data.path: {path} gives no training images")
    (trx, tr_y), (tex, te_y) = _to_chw(train), _to_chw(test)
    return ImageSplits(trx, tr_y, list(train.ids), tex, te_y, list(test.ids), [str(c) for c in train.class_names],
                       f"{fmt}:{path}")


# --------------------------------------------------------------------------- structures
def read_labelled_structures(path: str | Path, label_key: str = "label", id_key: str = "id",
                             label_name_key: str = "label_name", fmt: str | None = None
                             ) -> tuple[list[Any], np.ndarray, list[str], dict[int, str]]:
    """Read every frame of ``path`` with ASE: ``(atoms list, int64 labels [n], ids, {label: name})``.

    The label of frame ``i`` is ``atoms.info[label_key]`` (a non-negative integer); a
    missing or invalid one is a ``ValueError`` naming the file, the frame and its id.
    Ids come from ``info[id_key]`` (default: the frame index); class names from
    ``info[label_name_key]`` where present.
    """
    import ase.io

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data.path: {path} does not exist (expected an extended XYZ file of labelled "
                                f"structures, e.g. data/dipole_images/structures.extxyz)")
    try:
        frames = ase.io.read(str(path), index=":", format=fmt)
    except Exception as exc:
        raise ValueError(f"data.path: cannot read {path} with ASE ({type(exc).__name__}: {exc})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"data.path: {path} holds no structures")
    labels, ids, names = [], [], {}
    for i, atoms in enumerate(frames):
        sid = str(atoms.info.get(id_key, i))
        where = f"{path}: frame {i}" + (f" (id {sid})" if id_key in atoms.info else "")
        if label_key not in atoms.info:
            raise ValueError(f"{where} has no class label: info[{label_key!r}] is missing "
                             f"(info keys: {sorted(atoms.info)}); set data.label_key to the key that holds it")
        value = atoms.info[label_key]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 0:
            raise ValueError(f"{where}: info[{label_key!r}] = {value!r} is not a non-negative integer class")
        labels.append(int(value))
        ids.append(sid)
        if label_name_key in atoms.info:
            names.setdefault(int(value), str(atoms.info[label_name_key]))
    return frames, np.asarray(labels, dtype=np.int64), ids, names


@dataclass
class StructureSplits:
    """Per-structure graphs (built once) + int64 labels ``[n]`` + ids of both splits."""

    train_graphs: list[AtomicGraph]
    train_y: torch.Tensor
    train_ids: list[str]
    test_graphs: list[AtomicGraph]
    test_y: torch.Tensor
    test_ids: list[str]
    class_names: list[str]
    source: str

    def select(self, split: str) -> tuple[list[AtomicGraph], torch.Tensor, list[str]]:
        """``(graphs, labels [n], ids)`` of ``split`` (``test``, ``train`` or ``all``)."""
        return _select(split, (self.train_graphs, self.train_y, self.train_ids),
                       (self.test_graphs, self.test_y, self.test_ids), lambda a, b: a + b)


def _class_names(d: Mapping[str, Any], labels: np.ndarray, names: dict[int, str], ids: list[str],
                 path: Path) -> list[str]:
    """``data.class_names``, else the names found in the file (``class_<k>`` where none)."""
    if d["class_names"] is not None:
        class_names = [str(c) for c in d["class_names"]]
    else:
        k = max(int(labels.max()) + 1, 2, *(c + 1 for c in names))
        class_names = [names.get(c, f"class_{c}") for c in range(k)]
    bad = np.flatnonzero(labels >= len(class_names))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}: frame {i} (id {ids[i]}) has label {labels[i]}, but data.class_names lists "
                         f"{len(class_names)} classes")
    return class_names


def _graphs(frames: Sequence[Any], rows: np.ndarray, labels: np.ndarray, ids: list[str], path: Path,
            cutoff: float, max_neighbors: int | None, dtype: torch.dtype) -> list[AtomicGraph]:
    out = []
    for i in rows.tolist():
        try:
            g = AtomicGraph.from_atoms(frames[i], cutoff=cutoff, max_neighbors=max_neighbors, dtype=dtype)
        except ValueError as exc:
            raise ValueError(f"{path}: frame {i} (id {ids[i]}): {exc}") from None
        g.labels = torch.tensor([int(labels[i])], dtype=torch.long)
        out.append(g)
    return out


def load_structure_splits(data_cfg: Mapping[str, Any], cutoff: float, max_neighbors: int | None,
                          dtype: torch.dtype = torch.float32) -> StructureSplits:
    """Train / test splits of the structure route's ``data`` section (see ``STRUCTURE_DATA_SCHEMA``);
    one graph per structure with ``cutoff`` (Angstrom) and ``max_neighbors``."""
    d = resolve_section("data", data_cfg, STRUCTURE_DATA_SCHEMA)
    if not d["path"]:
        raise ValueError("data.path is not set: give an extended XYZ file of labelled structures "
                         "(e.g. --set data.path=data/dipole_images/structures.extxyz)")
    path = Path(d["path"]).expanduser()
    frames, labels, ids, names = read_labelled_structures(path, d["label_key"], d["id_key"], d["label_name_key"],
                                                          d["format"])
    class_names = _class_names(d, labels, names, ids, path)
    train_idx, test_idx = split_indices(len(frames), float(d["test_fraction"]), int(d["split_seed"]),
                                        group_names(ids, d["split_group"]))
    if d["limit"] is not None:
        train_idx = train_idx[: int(d["limit"])]
    if d["test_limit"] is not None:
        test_idx = test_idx[: int(d["test_limit"])]
    if len(train_idx) == 0:
        raise ValueError(f"data.path: {path} gives no training structures")

    def graphs(rows: np.ndarray) -> list[AtomicGraph]:
        return _graphs(frames, rows, labels, ids, path, cutoff, max_neighbors, dtype)

    return StructureSplits(graphs(train_idx), torch.from_numpy(labels[train_idx]), [ids[i] for i in train_idx],
                           graphs(test_idx), torch.from_numpy(labels[test_idx]), [ids[i] for i in test_idx],
                           class_names, f"structures:{path}")
