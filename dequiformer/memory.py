"""Memory of this process (MiB), for the training summaries and the benchmarks: resident size
(what the operating system has given the process) and allocated bytes (what the program holds)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Any

__all__ = ["AllocationPeak", "allocated_mb", "current_rss_mb", "peak_rss_mb"]

_highest_seen_mb = 0.0  # the largest value peak_rss_mb() has returned in this process


def _statm_rss_mb() -> float | None:
    """Resident memory now from Linux ``/proc/self/statm`` (MiB), ``None`` where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_mb() -> float:
    """The kernel's high-water mark ``ru_maxrss`` (MiB; kB on Linux, bytes on macOS)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB; Linux /proc, else the peak so far)."""
    now = _statm_rss_mb()
    return _maxrss_mb() if now is None else now


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB); never smaller than an earlier call's.

    The kernel's high-water mark (``ru_maxrss``) is updated lazily and can lag the current
    resident size by a few pages, so the larger of the two is taken, and the largest value
    returned so far is kept: a later call, whose ``ru_maxrss`` may still lag a resident size an
    earlier call saw, does not report less."""
    global _highest_seen_mb
    now = _statm_rss_mb()
    _highest_seen_mb = max(_highest_seen_mb, _maxrss_mb(), now or 0.0)
    return _highest_seen_mb


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33+): every field a size_t, in this order
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc older than 2.33
        return None
    fn.restype = _MallInfo2
    return fn


_mallinfo2 = _load_mallinfo2()


def allocated_mb() -> float | None:
    """Bytes the C heap has handed out and not taken back (MiB; glibc ``mallinfo2``: in-use heap
    chunks plus mmapped blocks, all arenas), ``None`` where the C library cannot say. Unlike the
    resident size it excludes memory the allocator keeps for reuse (its fragmentation)."""
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20


class AllocationPeak:
    """The highest allocated memory above the start of a ``with`` block (MiB), the CPU analogue of
    ``torch.cuda.max_memory_allocated``: ``with AllocationPeak() as p: ...`` then ``p.peak_mb``.

    On CPU the C heap's in-use bytes (:func:`allocated_mb`) are read after every torch operator,
    forward and backward (a dispatch mode; it slows the block down, so time nothing inside it);
    a temporary freed inside one operator is missed. On CUDA the allocator's own peak counter
    is used and nothing is slowed. ``peak_mb`` is ``None`` where neither can be read."""

    def __init__(self, device: str | Any = "cpu") -> None:
        self.device = str(device)
        self.peak_mb: float | None = None
        self._mode: Any = None
        self._start = 0.0

    def __enter__(self) -> "AllocationPeak":
        import torch

        from .device import synchronize

        if self.device.startswith("cuda"):
            synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device) / 2**20
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        if allocated_mb() is None:
            return self
        self._mode = _sampling_mode(self)
        self._mode.__enter__()
        torch.zeros(1).add_(1)  # the first operator under a dispatch mode initialises it (~20 MB, once)
        self._start, self.peak_mb = allocated_mb(), 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        from .device import synchronize

        if self.device.startswith("cuda"):
            synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20 - self._start
        elif self._mode is not None:
            self._mode.__exit__(*exc)
            self._mode = None

    def _observe(self) -> None:
        now = allocated_mb()
        if now is not None and self.peak_mb is not None:  # (None until the start is read)
            self.peak_mb = max(self.peak_mb, now - self._start)


def _sampling_mode(peak: AllocationPeak) -> Any:
    """A torch dispatch mode that lets ``peak`` read the heap after every operator."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Sample(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            out = func(*args, **(kwargs or {}))
            peak._observe()
            return out

    return _Sample()
