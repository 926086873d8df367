"""Distributed data parallel under ``torchrun``: detection, process group, reductions.

``torchrun --nproc_per_node N dequiformer train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; each process then trains on its shard of every global batch (see
:func:`dequiformer.train.dataset.epoch_batches`). Backend: ``nccl`` on GPU, ``gloo`` on CPU.
Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from ..device import resolve_device


@dataclass
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` without it)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"malformed torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {exc}") from None
    return rank, world, local


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``train.device`` for this rank: ``auto`` is the ``local_rank``-th GPU when CUDA is available,
    else CPU (:func:`dequiformer.device.resolve_device`; a missing device is a ``ValueError``)."""
    return resolve_device(preference, what="train.device", local_rank=local_rank)


def init_distributed(device_preference: str = "auto") -> DistInfo:
    """Start the process group when ``WORLD_SIZE > 1`` (idempotent) and pick this rank's device."""
    rank, world, local = env_world()
    device = pick_device(device_preference, local)
    if world <= 1:
        return DistInfo(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device, backend)


def shutdown(info: DistInfo) -> None:
    """Destroy the process group this module started."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sums(values: Sequence[float], info: DistInfo) -> list[float]:
    """Sum a list of floats over ranks (float64; identity in a single process)."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=info.device if info.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def all_reduce_dict(sums: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Sum a dict of floats over ranks; every rank must pass the same keys (missing = 0)."""
    keys = sorted(sums)
    if info.enabled:
        gathered: list[Any] = [None] * info.world_size
        dist.all_gather_object(gathered, keys)
        keys = sorted({k for ks in gathered for k in ks})
    values = all_reduce_sums([sums.get(k, 0.0) for k in keys], info)
    return dict(zip(keys, values))


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` in a single process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = True) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``model`` when distributed, else ``model`` itself.

    ``find_unused_parameters`` defaults on: some head parameters receive no gradient by
    construction (e.g. force-head channels that never reach the l = 1 output).
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)
