"""Logging for the package: one ``dequiformer`` logger tree, configured once.

Library modules log through ``logging.getLogger(__name__)``; :func:`setup_logging` (called by the
command line, and by the trainer when nothing has configured logging yet) sends their records to
stdout as plain lines and, for a training run, with time stamps to ``train.log`` in the run
directory. Under ``torchrun`` only rank 0 writes informational lines; warnings and errors from
every rank still get through, marked with their rank.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

__all__ = ["RankFilter", "add_log_file", "ensure_logging", "remove_log_file", "setup_logging"]

ROOT = "dequiformer"


def process_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RankFilter(logging.Filter):
    """Passes everything on rank 0; on other ranks only warnings and errors, prefixed by the rank."""

    def __init__(self, rank: int | None = None) -> None:
        super().__init__()
        self.rank = process_rank() if rank is None else int(rank)

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rank == 0:
            return True
        if record.levelno < logging.WARNING:
            return False
        record.msg = f"[rank {self.rank}] {record.msg}"
        return True


class _Stdout(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each record (redirections and test
    captures made after set-up are followed)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: int = logging.INFO, rank: int | None = None) -> logging.Logger:
    """Configure the ``dequiformer`` logger (idempotent): plain lines to stdout."""
    logger = logging.getLogger(ROOT)
    logger.setLevel(level)
    logger.propagate = False
    if not any(isinstance(h, _Stdout) for h in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(RankFilter(rank))
        logger.addHandler(handler)
    return logger


def ensure_logging(rank: int | None = None) -> None:
    """:func:`setup_logging` unless something (the command line, the user) configured the
    ``dequiformer`` logger already: library entry points used from Python still show their lines."""
    if not logging.getLogger(ROOT).handlers:
        setup_logging(rank=rank)


def remove_log_file(path: str | Path) -> None:
    """Detach and close the handler :func:`add_log_file` made for ``path`` (no error if none)."""
    logger = logging.getLogger(ROOT)
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == Path(path).resolve():
            logger.removeHandler(handler)
            handler.close()


def add_log_file(path: str | Path, rank: int | None = None) -> logging.Handler:
    """Also write the ``dequiformer`` records, time-stamped, to ``path`` (appending: a resumed
    run continues its log). Returns the handler (remove it with ``logger.removeHandler``)."""
    logger = logging.getLogger(ROOT)
    path = Path(path)
    for h in logger.handlers:
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve():
            return h
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RankFilter(rank))
    logger.addHandler(handler)
    return handler
