"""Run-directory I/O, one way for the whole package: atomic writes, JSON, checkpoints, RNG states.

Every file a run, a benchmark or a command leaves behind is written through :func:`atomic_output`
(temporary file beside the target, flushed and fsynced, then ``os.replace``, then the directory
fsynced): a process killed mid-write leaves the previous file, never a truncated one.

A checkpoint is a ``torch.save`` dict with ``format`` (``"dequiformer-checkpoint"``), ``version``
and ``kind`` (``"force_field"`` for the energy/force models, ``"classifier"`` for the graph-image
and structure classifiers); everything in it loads with ``torch.load(weights_only=True)``, so
opening a checkpoint never runs pickled code. What each kind holds is described where it is made
(:mod:`dequiformer.train.checkpoint`, :mod:`dequiformer.classify`).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

__all__ = ["CheckpointError", "FORMAT", "KINDS", "VERSION", "atomic_output", "write_extxyz", "load_checkpoint", "rng_state",
           "save_checkpoint", "set_rng_state", "write_json", "write_text"]

FORMAT = "dequiformer-checkpoint"
VERSION = 1
KINDS = ("force_field", "classifier")
REQUIRED_KEYS = ("config", "model")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, corrupt, of another kind, or lacks what is needed."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not let a directory be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds the file written there is
    fsynced and replaces ``path``. On an exception it is removed and ``path`` is left as it was.
    Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_extxyz(path: str | Path, frames: list) -> Path:
    """Write ASE ``Atoms`` frames (with their ``info``) as extended XYZ, atomically; an empty list
    gives an empty file."""
    with atomic_output(path) as tmp:
        if frames:
            import ase.io

            ase.io.write(str(tmp), frames, format="extxyz")
        else:
            tmp.write_text("")
    return Path(path)


def write_json(path: str | Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (no-op when ``path`` is None)."""
    if path is not None:
        write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------ checkpoints
def save_checkpoint(state: dict[str, Any], path: str | Path, kind: str = "force_field") -> Path:
    """Write ``state`` (weights-only types) with the format, version and ``kind`` fields, atomically."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    with atomic_output(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state, "kind": kind}, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    kind: str | None = "force_field") -> dict[str, Any]:
    """Read and check a checkpoint (``weights_only=True``).

    Args:
        path: a checkpoint file, or a run directory (its ``last.pt``).
        kind: the kind the caller can use (``None``: any); files written before kinds existed
            are force-field checkpoints.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: not a readable torch file, not a dequiformer checkpoint, another kind,
            a newer version, or a required key missing; the message names the file and the key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects...
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt, not a torch file, or holding pickled "
                              f"objects): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                              ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a dequiformer checkpoint (no 'format': {FORMAT!r} entry)")
    state.setdefault("kind", "force_field")
    if kind is not None and state["kind"] != kind:
        raise CheckpointError(f"{path}: a {state['kind']} checkpoint, but a {kind} checkpoint is needed here")
    for key in REQUIRED_KEYS:
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks key {key!r}")
    if int(state.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this package "
                              f"understands ({VERSION})")
    return state


# ---------------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU, CUDA, numpy global, python) in weights-only types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(py_version), "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
