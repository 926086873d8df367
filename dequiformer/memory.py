"""Resident memory of this process (MiB), for the training summaries and the benchmarks."""
from __future__ import annotations

import os
import sys

__all__ = ["current_rss_mb", "peak_rss_mb"]


def current_rss_mb() -> float:
    """Resident memory of this process now (MiB; Linux /proc, else the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB).

    The kernel's high-water mark (``ru_maxrss``) is updated lazily and can lag the current
    resident size by a few pages, so the larger of the two is returned."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = kb / 1024.0 if sys.platform != "darwin" else kb / 2**20
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return max(peak, pages * os.sysconf("SC_PAGE_SIZE") / 2**20)
    except (OSError, ValueError, IndexError):
        return peak
