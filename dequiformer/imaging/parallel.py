"""Map a labelling function (an xTB single point per molecule or crystal) over tasks in worker
processes, in order, for the offline data generators."""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Callable, Iterator, Sequence

__all__ = ["map_in_workers"]


def map_in_workers(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int, chunksize: int = 1) -> Iterator[Any]:
    """``fn(task)`` for each task, in order: in this process when ``workers == 1``, else in a
    pool of ``workers`` spawned processes (clean ones: no forked torch / OpenMP state), each with
    one OpenMP thread, since tblite with more threads than free cores is many times slower."""
    if workers == 1:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        for task in tasks:
            yield fn(task)
        return
    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
    try:
        pool = mp.get_context("spawn").Pool(workers)
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous
    try:
        yield from pool.imap(fn, tasks, chunksize=chunksize)
    finally:
        pool.terminate()
        pool.join()
