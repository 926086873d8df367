"""Resident memory of this process (MiB), for the training summaries and the benchmarks."""
from __future__ import annotations

import os
import sys

__all__ = ["current_rss_mb", "peak_rss_mb"]

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
