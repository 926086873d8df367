"""CIFAR-10 in its standard python layout (a sanity-check data set for the image classifier).

Layout (``cifar-10-python.tar.gz`` unpacked)::

    cifar-10-batches-py/
        data_batch_1 ... data_batch_5   pickled dicts: b"data" uint8 [10000, 3072], b"labels" list[int]
        test_batch                      same keys
        batches.meta                    b"label_names" list[bytes]

Each row of ``b"data"`` is 1024 red, then 1024 green, then 1024 blue values of a
32 x 32 image in row-major order.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .image_dataset import ImageDataset

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)


def _batch_dir(root: str | Path) -> Path:
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 directory not found: {root}")
    return root


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch file not found: {path}")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except Exception as exc:
        raise ValueError(f"could not unpickle CIFAR-10 file {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR-10 file {path} does not hold a dict")
    return obj


def _get(batch: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(f"CIFAR-10 file {path} lacks key {key!r}; has {sorted(map(str, batch))}")


def read_cifar10_uint8(root: str | Path, train: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images uint8 [n, 32, 32, 3], labels int64 [n], class names) of the train or test split."""
    folder = _batch_dir(root)
    images, labels = [], []
    for name in TRAIN_BATCHES if train else TEST_BATCHES:
        path = folder / name
        batch = _unpickle(path)
        data = np.asarray(_get(batch, "data", path), dtype=np.uint8)
        lab = np.asarray(_get(batch, "labels", path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"CIFAR-10 file {path}: b'data' must be [n, 3072], got {data.shape}")
        if len(lab) != len(data):
            raise ValueError(f"CIFAR-10 file {path}: {len(data)} images but {len(lab)} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lab)
    meta_path = folder / "batches.meta"
    if meta_path.is_file():
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in _get(_unpickle(meta_path), "label_names", meta_path)]
    else:
        names = list(CIFAR10_CLASSES)
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


def load_cifar10(root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """CIFAR-10 split as (float32 [n, 3, 32, 32] in [0, 1], int64 labels [n], class names).

    ``root`` is ``cifar-10-batches-py/`` or the folder that contains it.
    """
    images, labels, names = read_cifar10_uint8(root, train)
    x = torch.from_numpy(images).to(torch.float32).div_(255.0).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(labels), names


def cifar10_dataset(root: str | Path, train: bool = True) -> ImageDataset:
    """CIFAR-10 split as an :class:`ImageDataset`."""
    images, labels, names = read_cifar10_uint8(root, train)
    split = "train" if train else "test"
    return ImageDataset(images, labels, names, ids=[f"{split}_{i}" for i in range(len(labels))],
                        metadata={"source": "cifar10", "split": split, "root": str(Path(root))})
