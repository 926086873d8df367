"""One open handle per file, shared by every dataset that reads the file.

LMDB refuses to open an environment twice in one process, and a forked child (a DataLoader
worker) inherits its parent's record of open environments, so it cannot reopen them
either. Handles are therefore cached by real path; a forked child adopts the inherited
handle (read-only, lock-free environments allow this; ``adopt`` lets a caller patch
handle state such as a recorded pid), and a handle is reopened when the file was replaced
(new inode).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

# real path -> (pid that opened or adopted it, inode, handle, closer)
_HANDLES: dict[str, tuple[int, int, Any, Callable[[Any], None]]] = {}


def _inode(path: str | Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return -1


def shared_handle(path: str | Path, opener: Callable[[Path], Any], closer: Callable[[Any], None],
                  adopt: Callable[[Any], Any] | None = None) -> Any:
    """The cached handle of ``path``, opened with ``opener`` when there is none for this file."""
    key = os.path.realpath(str(path))
    inode = _inode(path)
    cached = _HANDLES.get(key)
    if cached is not None:
        pid, old_inode, handle, old_closer = cached
        if old_inode == inode:
            if pid != os.getpid():
                if adopt is not None:
                    handle = adopt(handle)
                _HANDLES[key] = (os.getpid(), inode, handle, old_closer)
            return handle
        release(path)
    handle = opener(Path(path))
    _HANDLES[key] = (os.getpid(), inode, handle, closer)
    return handle


def cached_handle(path: str | Path) -> Any | None:
    """The handle of ``path`` if one is open for the current file, else None."""
    cached = _HANDLES.get(os.path.realpath(str(path)))
    if cached is not None and cached[1] == _inode(path):
        return cached[2]
    return None


def release(path: str | Path) -> None:
    """Close and forget the handle on ``path`` (before the file is overwritten or deleted)."""
    cached = _HANDLES.pop(os.path.realpath(str(path)), None)
    if cached is not None and cached[0] == os.getpid():
        try:
            cached[3](cached[2])
        except Exception:
            pass
