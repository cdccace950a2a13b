"""A journal file that a cut-short write cannot corrupt.

A worker killed while appending to Optuna's journal file leaves a partial last line. Optuna
skips it when reading, but the next append would go straight after it, merging the two
into one undecodable line in the middle of the file: from then on every study in the
journal fails to load with ``JSONDecodeError``. :func:`open_journal_backend` cuts such a
torn tail off (keeping a copy of it beside the journal) when the journal is opened, and
before every append, under the journal's own lock, so no record is ever written after a
partial line.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

__all__ = ["open_journal_backend", "repair_torn_tail"]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16


class _RepairingLock(JournalFileSymlinkLock):
    """Optuna's default journal lock, cutting a torn tail off each time it is taken.

    Optuna's backend takes this lock around every append, so the repair and the write that
    follows it are one step for every other worker (they take the same lock file).
    """

    def __init__(self, journal: str) -> None:
        super().__init__(journal)
        self._journal = Path(journal)

    def acquire(self) -> bool:
        super().acquire()
        try:
            _cut_tail(self._journal)
        except BaseException:
            self.release()
            raise
        return True


def open_journal_backend(path: str | Path) -> JournalFileBackend:
    """Optuna's journal file backend on ``path``, its torn tail (if any) repaired first."""
    path = str(path)
    lock = _RepairingLock(path)
    backend = JournalFileBackend(path, lock_obj=lock)
    repair_torn_tail(path, lock=lock)
    return backend


def repair_torn_tail(path: str | Path, *, lock: JournalFileSymlinkLock | None = None) -> Path | None:
    """Truncate ``path`` to its last complete record if its last line is torn.

    A line is torn if the file does not end in a newline or its last line is not JSON. The
    removed bytes are kept in ``<path>.torn-<timestamp>``, whose path is returned.

    Args:
        path: The journal file.
        lock: The journal's lock, taken for the repair (Optuna's default lock on ``path``
            when not given), so that a write in progress is not mistaken for a torn one.
    """
    path = Path(path)
    if _torn_from(path) is None:  # the common case, checked without waiting for the lock
        return None
    lock = lock or JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        return _cut_tail(path)
    finally:
        lock.release()


def _cut_tail(path: Path) -> Path | None:
    start = _torn_from(path)
    if start is None:
        return None
    with open(path, "r+b") as journal:
        journal.seek(start)
        torn = journal.read()
        copy = path.with_name(f"{path.name}.torn-{datetime.now().strftime('%Y%m%dT%H%M%S%f')}")
        with open(copy, "xb") as out:  # saved before the journal is cut, so a crash loses nothing
            out.write(torn)
            out.flush()
            os.fsync(out.fileno())
        journal.truncate(start)
        journal.flush()
        os.fsync(journal.fileno())
    log.warning(
        "journal %s ended in a torn record (%d bytes, a write cut short); removed it, copy kept in %s",
        path,
        len(torn),
        copy,
    )
    return copy


def _torn_from(path: Path) -> int | None:
    """Offset where the torn last line of ``path`` starts; ``None`` when the file ends cleanly."""
    with open(path, "rb") as journal:
        size = journal.seek(0, os.SEEK_END)
        if size == 0:
            return None
        end = size
        journal.seek(size - 1)
        if journal.read(1) == b"\n":
            end = size - 1  # look for the line before this final newline
        start = _line_start(journal, end)
        if end == size - 1:
            journal.seek(start)
            try:
                json.loads(journal.read(size - start))
            except ValueError:  # not JSON, or not UTF-8
                return start
            return None
        return start


def _line_start(journal: BinaryIO, end: int) -> int:
    """Offset just after the last newline before ``end`` (0 if none), read backwards in chunks."""
    pos = end
    while pos > 0:
        step = min(_CHUNK, pos)
        journal.seek(pos - step)
        found = journal.read(step).rfind(b"\n")
        if found >= 0:
            return pos - step + found + 1
        pos -= step
    return 0
