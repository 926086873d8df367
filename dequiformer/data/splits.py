"""Train / validation / test splits: Equiformer's MD17 rule, rMD17 official splits, OC20 files.

MD17 rule (Equiformer, TorchMD-Net): ``perm = numpy.random.default_rng(seed).permutation(n)``;
the first ``n_train`` (950) indices are the training set, the next ``n_val`` (50) the
validation set, and the rest (or the next ``n_test``) the test set.

rMD17 official splits (``splits/index_train_0K.csv``, ``splits/index_test_0K.csv``, one
integer per line, K = 1..5): the test CSV is the test set; the train CSV is the pool from
which train and validation are taken by the same rng rule applied to the pool.

OC20: training and validation data are separate files (``data.path``, ``data.val_path``).

Splits are saved to a run directory as ``splits.npz`` (arrays ``train``, ``val``, ``test``
plus metadata), written atomically, and reloaded when a run resumes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .readers import FrameDataset, read_dataset
from ..rundir import atomic_output

SPLITS_FILE = "splits.npz"


@dataclass
class Splits:
    """Index arrays (int64) into a data set; ``meta`` records how they were made."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "val", "test"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))

    def sizes(self) -> dict[str, int]:
        """Number of indices in each part."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def check(self, n: int, source: str = "data set") -> None:
        """Raise ValueError when an index is outside ``[0, n)`` or train/val/test overlap."""
        for name in ("train", "val", "test"):
            idx = getattr(self, name)
            if len(idx) and (idx.min() < 0 or idx.max() >= n):
                bad = idx[(idx < 0) | (idx >= n)][0]
                raise ValueError(f"{source}: {name} split index {int(bad)} out of range for {n} frames")
        if not self.meta.get("separate_files"):
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                common = np.intersect1d(getattr(self, a), getattr(self, b))
                if len(common):
                    raise ValueError(f"{source}: {a} and {b} splits share {len(common)} indices "
                                     f"(e.g. {int(common[0])})")

    def save(self, path: str | Path) -> Path:
        """Write ``splits.npz`` into a run directory (or to a given ``.npz`` file), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path / SPLITS_FILE
        meta = {f"meta_{k}": np.asarray(v) for k, v in self.meta.items() if v is not None}
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, train=self.train, val=self.val, test=self.test, **meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Splits":
        """Read splits saved by :meth:`save` (a run directory or the ``.npz`` file)."""
        path = Path(path)
        if path.is_dir():
            path = path / SPLITS_FILE
        if not path.exists():
            raise FileNotFoundError(f"splits file not found: {path}")
        with np.load(path, allow_pickle=False) as npz:
            for key in ("train", "val", "test"):
                if key not in npz.files:
                    raise ValueError(f"{path}: missing key {key!r} (file has keys {sorted(npz.files)})")
            meta = {k[5:]: npz[k].item() if npz[k].ndim == 0 else npz[k].tolist()
                    for k in npz.files if k.startswith("meta_")}
            return cls(npz["train"], npz["val"], npz["test"], meta)


def random_split(n: int, n_train: int = 950, n_val: int = 50, n_test: int | None = None,
                 seed: int = 1) -> Splits:
    """Equiformer's MD17 split of ``n`` frames: permutation by ``default_rng(seed)``, then
    ``n_train`` train, ``n_val`` validation and ``n_test`` test (None: all the rest)."""
    if n_train < 0 or n_val < 0 or (n_test is not None and n_test < 0):
        raise ValueError(f"split sizes must be non-negative, got n_train={n_train}, n_val={n_val}, n_test={n_test}")
    rest = n - n_train - n_val
    if rest < 0:
        raise ValueError(f"cannot take n_train={n_train} + n_val={n_val} frames from a data set of {n}")
    if n_test is None:
        n_test = rest
    elif n_test > rest:
        raise ValueError(f"cannot take n_test={n_test} frames: only {rest} remain after "
                         f"n_train={n_train} and n_val={n_val} of {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return Splits(perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:n_train + n_val + n_test],
                  meta={"method": "random", "seed": int(seed), "n": int(n)})


def split_train_pool(pool: np.ndarray, test: np.ndarray, n_train: int | None = None, n_val: int = 50,
                     seed: int = 1) -> Splits:
    """Train and validation from a fixed pool (rMD17 train CSV) by the rng rule; ``test`` as given.

    ``n_train=None`` takes all of the pool left after ``n_val``.
    """
    pool = np.asarray(pool, dtype=np.int64).reshape(-1)
    if n_train is None:
        n_train = len(pool) - n_val
    if n_train < 0 or n_val < 0 or n_train + n_val > len(pool):
        raise ValueError(f"cannot take n_train={n_train} + n_val={n_val} from a training pool of {len(pool)}")
    perm = np.random.default_rng(seed).permutation(len(pool))
    return Splits(pool[perm[:n_train]], pool[perm[n_train:n_train + n_val]], np.asarray(test, dtype=np.int64),
                  meta={"method": "pool", "seed": int(seed)})


def read_index_csv(path: str | Path) -> np.ndarray:
    """Read a split CSV: one non-negative integer index per line (blank lines ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"split file not found: {path}")
    out: list[int] = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            text = line.strip().split(",")[0].strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: {line.strip()!r} is not an integer index") from None
            if not value.is_integer() or value < 0:
                raise ValueError(f"{path}: line {lineno}: {line.strip()!r} is not a non-negative integer index")
            out.append(int(value))
    if not out:
        raise ValueError(f"{path}: split file holds no indices")
    return np.asarray(out, dtype=np.int64)


def find_rmd17_split_files(npz_path: str | Path | None = None, split: int = 1,
                           splits_dir: str | Path | None = None) -> tuple[Path, Path] | None:
    """Locate ``index_train_0K.csv`` / ``index_test_0K.csv`` for official rMD17 split ``K``.

    Looks in ``splits_dir`` when given (error if absent there), else in ``splits/`` beside the
    npz file and beside its folder (the figshare archive has ``rmd17/npz_data/*.npz`` and
    ``rmd17/splits/*.csv``). Returns None when not found without ``splits_dir``.
    """
    names = (f"index_train_{int(split):02d}.csv", f"index_test_{int(split):02d}.csv")
    if splits_dir is not None:
        d = Path(splits_dir)
        train, test = d / names[0], d / names[1]
        for p in (train, test):
            if not p.exists():
                raise FileNotFoundError(f"rMD17 split file not found: {p}")
        return train, test
    if npz_path is None:
        return None
    parent = Path(npz_path).resolve().parent
    for d in (parent / "splits", parent.parent / "splits"):
        if (d / names[0]).exists() and (d / names[1]).exists():
            return d / names[0], d / names[1]
    return None


def rmd17_official_split(n: int, npz_path: str | Path | None = None, split: int = 1,
                         splits_dir: str | Path | None = None, n_train: int | None = 950, n_val: int = 50,
                         seed: int = 1) -> Splits:
    """Official rMD17 split ``split`` (1..5) for a data set of ``n`` frames.

    Test = the test CSV; train and validation are drawn from the train CSV by the rng rule.
    """
    files = find_rmd17_split_files(npz_path, split, splits_dir)
    if files is None:
        raise FileNotFoundError(f"rMD17 split {split} not found beside {npz_path} (looked for splits/"
                                f"index_train_{int(split):02d}.csv); set data.splits_dir")
    pool, test = read_index_csv(files[0]), read_index_csv(files[1])
    splits = split_train_pool(pool, test, n_train=n_train, n_val=n_val, seed=seed)
    splits.meta.update({"method": "rmd17_official", "split": int(split), "n": int(n),
                        "train_csv": str(files[0]), "test_csv": str(files[1])})
    splits.check(n, str(npz_path or "rMD17 data"))
    return splits


def make_splits(dataset: FrameDataset, n_train: int | None = 950, n_val: int = 50, n_test: int | None = None,
                seed: int = 1, rmd17_split: int | None = None, splits_dir: str | Path | None = None,
                run_dir: str | Path | None = None) -> Splits:
    """Splits for one data set; reuse ``run_dir/splits.npz`` when it exists, else make and save it.

    With ``rmd17_split`` (or ``splits_dir``) the official rMD17 CSVs are used; otherwise the
    Equiformer rng rule (``n_train=None`` means all frames left after validation and test).
    """
    n = len(dataset)
    if run_dir is not None and (Path(run_dir) / SPLITS_FILE).exists():
        splits = Splits.load(run_dir)
        saved_n = splits.meta.get("n")
        if saved_n is not None and int(saved_n) != n:
            raise ValueError(f"{Path(run_dir) / SPLITS_FILE} was made for {saved_n} frames but {dataset.source} "
                             f"has {n}; use a new run directory or delete the splits file")
        splits.check(n, dataset.source)
        return splits
    if rmd17_split is not None or splits_dir is not None:
        splits = rmd17_official_split(n, dataset.source, rmd17_split or 1, splits_dir, n_train, n_val, seed)
    else:
        if n_train is None:
            n_train = n - n_val - (n_test or 0)
        splits = random_split(n, n_train, n_val, n_test, seed)
    splits.meta["source"] = dataset.source
    if run_dir is not None:
        splits.save(run_dir)
    return splits


def _subset_size(n: int, size: int | None, seed: int) -> np.ndarray:
    if size is None or size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).permutation(n)[:size]).astype(np.int64)


def datasets_from_config(data_cfg: dict[str, Any], run_dir: str | Path | None = None) -> dict[str, FrameDataset | None]:
    """Train / val / test :class:`FrameDataset` objects from the ``data`` section of a config.

    Keys: ``path`` (required), ``format`` (auto when absent), ``options`` (reader options),
    ``val_path`` / ``test_path`` (separate files, e.g. OC20 train and val LMDBs, or the MD17
    CCSD(T) ``-train.npz`` / ``-test.npz`` pair: with only ``test_path``, ``path`` is split
    into train and validation and the whole test file is the test set), ``n_train``
    (950), ``n_val`` (50), ``n_test`` (None: the rest), ``seed`` (1), ``rmd17_split`` (1..5, use
    the official rMD17 CSVs), ``splits_dir``. With ``val_path``, the training set is the whole
    ``path`` (or a seeded subset of ``n_train`` when that key is set) and the validation set
    the whole ``val_path`` (or ``n_val`` when set). The splits are saved to / reused from
    ``run_dir/splits.npz``.
    """
    if "path" not in data_cfg or data_cfg["path"] in (None, ""):
        raise ValueError("config key data.path is not set (e.g. --set data.path=/data/md17_aspirin.npz)")
    fmt = data_cfg.get("format")
    options = dict(data_cfg.get("options") or {})
    seed = int(data_cfg.get("seed", 1))
    full = read_dataset(data_cfg["path"], fmt, **options)
    if data_cfg.get("val_path"):
        val_full = read_dataset(data_cfg["val_path"], fmt, **options)
        test_full = read_dataset(data_cfg["test_path"], fmt, **options) if data_cfg.get("test_path") else None
        saved = Path(run_dir) / SPLITS_FILE if run_dir is not None else None
        if saved is not None and saved.exists():
            splits = Splits.load(saved)
        else:
            splits = Splits(
                _subset_size(len(full), data_cfg.get("n_train"), seed),
                _subset_size(len(val_full), data_cfg.get("n_val"), seed),
                np.arange(len(test_full) if test_full is not None else 0),
                meta={"method": "separate_files", "separate_files": True, "seed": seed, "n": len(full),
                      "source": str(data_cfg["path"]), "val_source": str(data_cfg["val_path"])},
            )
            if run_dir is not None:
                splits.save(run_dir)
        for name, ds, idx in (("train", full, splits.train), ("val", val_full, splits.val)):
            if len(idx) and idx.max() >= len(ds):
                raise ValueError(f"{ds.source}: saved {name} split index {int(idx.max())} out of range for {len(ds)}")
        return {"train": full.subset(splits.train), "val": val_full.subset(splits.val),
                "test": None if test_full is None else test_full.subset(splits.test)}
    test_file = read_dataset(data_cfg["test_path"], fmt, **options) if data_cfg.get("test_path") else None
    splits = make_splits(full, n_train=data_cfg.get("n_train", 950), n_val=int(data_cfg.get("n_val", 50)),
                         n_test=0 if test_file is not None else data_cfg.get("n_test"), seed=seed,
                         rmd17_split=data_cfg.get("rmd17_split"), splits_dir=data_cfg.get("splits_dir"),
                         run_dir=run_dir)
    if test_file is not None:
        test = test_file
    else:
        test = full.subset(splits.test) if len(splits.test) else None
    return {"train": full.subset(splits.train), "val": full.subset(splits.val), "test": test}
