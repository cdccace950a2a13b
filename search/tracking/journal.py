"""A journal file that a cut-short write cannot corrupt.

A worker killed while appending to Optuna's journal file leaves a partial last line. Optuna
skips it when reading, but the next append would go straight after it, merging the two
into one undecodable line in the middle of the file: from then on every study in the
journal fails to load with ``JSONDecodeError``. :func:`open_journal_backend` cuts such a
torn tail off (keeping a copy of it beside the journal) when the journal is opened, and
before every append, under the journal's own lock, so no record is ever written after a
partial line.

A record that cannot be read anywhere else in the file (a zeroed block, a torn write that a
writer other than blocknas appended to) would make Optuna refuse the whole file as well.
:func:`repair_bad_records` (run when the journal is opened) moves every such line to
``<journal>.bad``, under its line number, keeping the complete record that followed a torn
write inside the same line, so only the unreadable bytes leave the journal and none are lost.
:class:`ReadOnlyJournal` reads the same records without changing the file.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from optuna.storages.journal import BaseJournalBackend, JournalFileBackend, JournalFileSymlinkLock

from ..pause_points import pause_point

_T = TypeVar("_T")

__all__ = [
    "LOCK_GRACE_ENV",
    "BadRecord",
    "JournalDamageError",
    "ReadOnlyJournal",
    "bad_records",
    "open_journal_backend",
    "repair_bad_records",
    "repair_torn_tail",
    "torn_tail",
]

log = logging.getLogger(__name__)

_CHUNK = 1 << 16
LOCK_GRACE_ENV = "BLOCKNAS_JOURNAL_LOCK_GRACE_S"


class _RepairingLock(JournalFileSymlinkLock):
    """Optuna's default journal lock (the same lock file), that knows whether it still holds it.

    Optuna's waiters break a lock held longer than its grace period (30 s, or
    ``$BLOCKNAS_JOURNAL_LOCK_GRACE_S``): a worker stopped while holding it (``SIGSTOP``, a
    suspended VM, swap) finds, when it goes on, that another process took the lock and wrote.
    Optuna's own lock then raises "did not possess lock" from its release, after its write, and
    would remove a third process's lock. This one names itself in the link (a unique target;
    Optuna's locks never read it), so :meth:`held` tells whether the lock is still this one's
    and :meth:`release` never removes another's. Each time it is taken a torn tail is cut off,
    so the repair and the write that follows are one step for every other worker.
    """

    def __init__(self, journal: str) -> None:
        super().__init__(journal, grace_period=int(os.environ.get(LOCK_GRACE_ENV, "30")))
        self._journal = Path(journal)
        self._token = ""

    def acquire(self) -> bool:
        sleep_s, seen_mtime, seen_at = 0.001, None, time.monotonic()
        self._token = f"{self._journal}#{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        while True:
            try:
                os.symlink(self._token, self._lock_file)
                break
            except FileExistsError:
                try:
                    mtime = os.lstat(self._lock_file).st_mtime
                except OSError:
                    continue  # released meanwhile
                if mtime != seen_mtime:
                    seen_mtime, seen_at = mtime, time.monotonic()
                elif self.grace_period is not None and time.monotonic() - seen_at > self.grace_period:
                    log.warning(
                        "journal %s: its lock has been held for over %d s; breaking it",
                        self._journal,
                        self.grace_period,
                    )
                    _remove_lock(self._lock_file)
                    sleep_s = 0.001
                    continue
                time.sleep(sleep_s)
                sleep_s = min(2 * sleep_s, 1.0)
        try:
            _cut_tail(self._journal)
        except BaseException:
            self.release()
            raise
        return True

    def held(self) -> bool:
        """Whether the lock file is still the one this lock created (nobody broke it)."""
        try:
            return os.readlink(self._lock_file) == self._token
        except OSError:
            return False

    def release(self) -> None:
        if self.held():
            _remove_lock(self._lock_file)
        else:
            log.warning(
                "journal %s: this process's lock was broken by another (held past the grace period)", self._journal
            )


def _remove_lock(lock_file: str) -> None:
    """Remove a lock file the way Optuna does (renamed first, so two removers never remove a third's lock)."""
    aside = f"{lock_file}{uuid.uuid4().hex}.rename"
    try:
        os.rename(lock_file, aside)
    except OSError:
        return  # already removed
    os.unlink(aside)


class _Backend(JournalFileBackend):
    """Optuna's journal file backend whose append survives a broken lock.

    The records are written in one ``write`` to a file opened for appending, so they land whole
    or not at all. The lock is checked just before: if another process broke it (this one was
    stopped past the grace period) nothing was written, and the append starts again under a
    fresh lock. If it was broken after the write, the records are in and only a warning says so.
    """

    _lock: _RepairingLock

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(record, separators=(",", ":")) for record in logs) + "\n").encode()
        first = True
        while True:
            self._lock.acquire()
            try:
                if first:  # a test stops a writer here holding the lock, once
                    pause_point("journal-append")
                    first = False
                if not self._lock.held():
                    log.warning("journal %s: nothing was written; writing again under a fresh lock", self._file_path)
                    continue  # the release below leaves the other process's lock alone
                with open(self._file_path, "ab", buffering=0) as journal:  # one write() call, no buffer
                    left = memoryview(data)
                    while left:  # short only at a disk or size limit: the next call raises its error
                        left = left[journal.write(left) or 0 :]
                    os.fsync(journal.fileno())
                return
            finally:
                self._lock.release()


def open_journal_backend(path: str | Path) -> JournalFileBackend:
    """Optuna's journal file backend on ``path``, its torn tail and unreadable records (if any) repaired first."""
    path = str(path)
    lock = _RepairingLock(path)
    backend = _Backend(path, lock_obj=lock)
    repair_torn_tail(path, lock=lock)
    repair_bad_records(path, lock=lock)
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
    return _under_lock(path, lock, _cut_tail)


def _under_lock(path: Path, lock: JournalFileSymlinkLock | None, repair: Callable[[Path], _T]) -> _T:
    """``repair(path)`` holding the journal's lock (Optuna's default lock on ``path`` when not given)."""
    lock = lock or JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        return repair(path)
    finally:
        lock.release()


def torn_tail(path: str | Path) -> int:
    """Size in bytes of the torn last record of the journal ``path`` (0 when it ends cleanly); changes nothing."""
    path = Path(path)
    start = _torn_from(path)
    return 0 if start is None else path.stat().st_size - start


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


_RECORD_START = b'{"op_code":'  # how Optuna's journal writer starts every record
_CREATE_STUDY, _CREATE_TRIAL = 0, 4  # Optuna's JournalOperation codes (optuna/storages/journal/_storage.py)


class JournalDamageError(RuntimeError):
    """A journal's unreadable line cannot be left out without mixing up the records after it."""


@dataclass(frozen=True)
class BadRecord:
    """A complete line of a journal file that is not a journal record.

    Attributes:
        line: Its 1-based line number in the file.
        raw: The whole line, newline included.
        kept: The complete record found after a torn write inside the line (a writer appended
            to a cut-short record), which stays in the journal; ``None`` when there is none.
    """

    line: int
    raw: bytes
    kept: bytes | None


def _record(raw: bytes) -> dict[str, Any] | None:
    """The journal record on one line, or ``None`` if the line is not one (not UTF-8 JSON, no op code)."""
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) and type(record.get("op_code")) is int else None


def _salvage(raw: bytes) -> bytes | None:
    """The complete record that ends ``raw`` after a torn write's fragment, if there is one."""
    start = raw.find(_RECORD_START, 1)
    while start > 0:
        if _record(raw[start:]) is not None:
            return raw[start:]
        start = raw.find(_RECORD_START, start + 1)
    return None


def _lines(path: Path) -> Iterator[tuple[int, bytes, dict[str, Any] | None]]:
    """(1-based number, bytes, record or ``None``) of every complete line; a torn last line is left out."""
    with open(path, "rb") as journal:
        for number, raw in enumerate(journal, start=1):
            if raw.endswith(b"\n"):
                yield number, raw, _record(raw)


def bad_records(path: str | Path) -> list[BadRecord]:
    """Every complete line of the journal ``path`` that Optuna could not read, without changing the file."""
    return [BadRecord(number, raw, _salvage(raw)) for number, raw, record in _lines(Path(path)) if record is None]


def _kept(path: Path) -> tuple[list[dict[str, Any]], list[BadRecord]]:
    """The records Optuna reads once the unreadable lines are left out (salvaged ones kept), and those lines.

    Raises:
        JournalDamageError: A line left out created a study or a trial that later records name.
    """
    records: list[dict[str, Any]] = []
    bad: list[BadRecord] = []
    for number, raw, record in _lines(path):
        if record is None:
            bad.append(BadRecord(number, raw, _salvage(raw)))
            record = _record(bad[-1].kept) if bad[-1].kept else None
        if record is not None:
            records.append(record)
    if any(record.kept is None for record in bad):
        _check_creations(path, records, bad)
    return records, bad


def _check_creations(path: Path, records: list[dict[str, Any]], bad: list[BadRecord]) -> None:
    """Optuna numbers studies and trials by the order of their creation records; a lost one shifts every later id."""
    for what, created_by in (("study", _CREATE_STUDY), ("trial", _CREATE_TRIAL)):
        created = sum(1 for record in records if record["op_code"] == created_by)
        named = [record[f"{what}_id"] for record in records if isinstance(record.get(f"{what}_id"), int)]
        if named and max(named) >= created:
            lines = ", ".join(str(record.line) for record in bad if not record.kept)
            first = min(record.line for record in bad if not record.kept)
            raise JournalDamageError(
                f"journal {path}: line {lines} cannot be read and created a {what} that later records name "
                f"(Optuna numbers {what}s by the order of their creation records, so without it every later "
                f"{what}'s records would land on the wrong {what}). Nothing was changed. Restore the journal from "
                f"a copy, or keep what comes before the damage: `head -n {first - 1} {path} > fixed.journal` "
                f"(the lines after it are lost from the study)"
            )


def repair_bad_records(path: str | Path, *, lock: JournalFileSymlinkLock | None = None) -> list[BadRecord]:
    """Move every unreadable complete line of the journal ``path`` to ``<path>.bad``; return them.

    Each line is appended to ``<path>.bad`` as ``line N of <name>, removed <time>: <its bytes>``
    (saved before the journal changes), and a complete record after a torn write inside the line
    stays in the journal. The journal is rewritten beside itself and renamed over, under its
    lock and after looking again, so of workers opening a damaged journal together one repairs
    it and the others find it repaired. Only a line no reader could pass is removed, so the
    records before it keep their offsets for readers that have the journal open.

    Args:
        path: The journal file.
        lock: The journal's lock (Optuna's default lock on ``path`` when not given).

    Raises:
        JournalDamageError: A line to remove created a study or trial that later records name
            (Optuna numbers them by the order of creation): the journal is left as it is.
    """
    path = Path(path)
    if not bad_records(path):  # the common case, checked without waiting for the lock
        return []
    return _under_lock(path, lock, _remove_bad)


def _remove_bad(path: Path) -> list[BadRecord]:
    _, bad = _kept(path)
    if not bad:
        return []  # another process repaired it while this one waited for the lock
    aside = path.with_name(f"{path.name}.bad")
    removed = datetime.now().isoformat(timespec="seconds")
    with open(aside, "ab") as out:
        for record in bad:
            out.write(f"line {record.line} of {path.name}, removed {removed}: ".encode() + record.raw)
        out.flush()
        os.fsync(out.fileno())
    by_line = {record.line: record for record in bad}
    fresh = path.with_name(f"{path.name}.repairing")
    with open(path, "rb") as journal, open(fresh, "wb") as out:
        for number, raw in enumerate(journal, start=1):
            if number in by_line:
                raw = by_line[number].kept or b""
            out.write(raw)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(fresh, os.stat(path).st_mode)
    os.replace(fresh, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    for record in bad:
        log.warning(
            "journal %s: line %d is not a readable record (%d bytes, damaged or a torn write appended to); "
            "%s, the whole line is kept in %s",
            path,
            record.line,
            len(record.raw),
            "kept the complete record after the torn write in it" if record.kept else "removed it",
            aside,
        )
    return bad


class ReadOnlyJournal(BaseJournalBackend):
    """The readable records of a journal file as they are when it is opened; writing is refused.

    What a checker reads: the records Optuna would read after :func:`repair_bad_records`, with
    the file left as it is (a torn last line is left out, as Optuna leaves it out).

    Raises:
        JournalDamageError: As :func:`repair_bad_records` would.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records, _ = _kept(self.path)

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        yield from self._records[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise PermissionError(f"{self.path} is opened read-only; nothing is written to it")
