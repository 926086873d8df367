"""Labelled image data set with an atomic ``.npz`` cache.

On disk (``numpy.savez_compressed``, loadable with ``allow_pickle=False``):

=============== ==================== =========================================
key             dtype / shape        meaning
=============== ==================== =========================================
``images``      uint8 [n, H, W, 3]   RGB images
``labels``      int64 [n]            class index per image
``class_names`` str [C]              name of each class index
``ids``         str [n]              structure / sample id per image
``metadata``    str (0-d)            JSON object (source files, thresholds, ...)
``format``      str (0-d)            ``"dequiformer-image-dataset/1"``
=============== ==================== =========================================
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from ..rundir import atomic_output

FORMAT = "dequiformer-image-dataset/1"
_REQUIRED_KEYS = ("images", "labels", "class_names")


class ImageDataset(Dataset):
    """Images with integer labels; ``ds[i] -> (float32 tensor [3, H, W] in [0, 1], int label)``.

    images: uint8 [n, H, W, 3]; labels: int [n] in ``range(len(class_names))``;
    ids: optional names per image; metadata: JSON-serialisable dict.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be uint8 [n, H, W, 3], got {images.dtype} {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise ValueError("class_names is empty")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"labels must lie in [0, {len(class_names) - 1}], "
                             f"got range [{labels.min()}, {labels.max()}]")
        ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
        if len(ids) != len(images):
            raise ValueError(f"{len(images)} images but {len(ids)} ids")
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.ids = ids
        self.metadata = dict(metadata or {})
        json.dumps(self.metadata)  # fail early on non-serialisable metadata

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).to(torch.float32) / 255.0
        return image.permute(2, 0, 1).contiguous(), int(self.labels[index])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All data at once: (float32 [n, 3, H, W] in [0, 1], int64 labels [n])."""
        x = torch.from_numpy(self.images).to(torch.float32).div_(255.0).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(self.labels.copy())

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """A new data set with the selected rows (same classes and metadata)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(self.images[idx], self.labels[idx], self.class_names,
                            [self.ids[i] for i in idx], self.metadata)

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` (``.npz`` appended if missing) atomically: temp file + rename."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                images=self.images,
                labels=self.labels,
                class_names=np.array(self.class_names, dtype=str),
                ids=np.array(self.ids, dtype=str),
                metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
                format=np.array(FORMAT),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ImageDataset":
        """Read a file written by :meth:`save`; errors name the file and the missing key."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"image data set file not found: {path}")
        try:
            archive = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ValueError(f"could not read image data set {path}: {exc}") from exc
        with archive:
            missing = [k for k in _REQUIRED_KEYS if k not in archive.files]
            if missing:
                raise KeyError(f"image data set {path} lacks array(s) {missing}; has {archive.files}")
            ids = archive["ids"].tolist() if "ids" in archive.files else None
            metadata = json.loads(str(archive["metadata"])) if "metadata" in archive.files else {}
            return cls(archive["images"], archive["labels"], archive["class_names"].tolist(), ids, metadata)

    def __repr__(self) -> str:
        return (f"ImageDataset(n={len(self)}, size={self.image_size}, "
                f"classes={self.class_counts()})")
