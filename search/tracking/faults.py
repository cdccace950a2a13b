"""Storage and disk faults: a full disk, a size or quota limit, a read-only or forbidden folder,
a lost database connection. Each is one paragraph naming the path (or store) and what to do,
never a traceback: :func:`storage_fault` recognises one anywhere in an exception's chain.

Nothing finished is lost by such a fault: a trial is only counted once Optuna has stored its
result, and a trial cut short is failed and retried (or left RUNNING for the next worker's
recovery, when even that cannot be written), so a rerun after fixing the cause continues.
"""

from __future__ import annotations

import errno
import io
import os

from .masking import mask_url
from .storage import StorageError

__all__ = ["DISK_ERRNOS", "StorageFault", "storage_fault"]

DISK_ERRNOS = {
    errno.ENOSPC: "free space on that disk, or point runs_dir / --storage / --tracking-uri at one with room",
    errno.EDQUOT: "free space within your quota (or have it raised), or point runs_dir / --storage elsewhere",
    errno.EFBIG: "the file reached its size limit (ulimit -f, or the filesystem's): lift the limit or "
    "point runs_dir / --storage / --tracking-uri at another disk",
    errno.EROFS: "the filesystem is read-only: remount it read-write or point runs_dir / --storage elsewhere",
    errno.EACCES: "this user may not write there: fix the path's owner or mode (or chattr -i it), "
    "or point runs_dir / --storage / --tracking-uri elsewhere",
    errno.EPERM: "the path refuses writes (an immutable or append-only attribute? lsattr shows it): "
    "chattr -i it or point runs_dir / --storage / --tracking-uri elsewhere",
}
"""The errnos of a disk that refuses a write, each with what the user can do about it."""

_SQLITE_DISK_ERRORS = ("database or disk is full", "disk i/o error", "readonly database", "unable to open database")
_RESUME = (
    "Nothing finished is lost: rerun the same command then, and the study continues (a trial cut short is retried)."
)


class StorageFault(RuntimeError):
    """A store could not be written or reached for a reason outside blocknas (disk, permissions, network).

    Its message is the paragraph the user reads; ``blocknas`` exits 2 with it.
    """


def storage_fault(exc: BaseException, *, stores: tuple[str, ...] = ()) -> StorageFault | None:
    """The :class:`StorageFault` that ``exc`` (or an exception it was raised from or during) stands for, else None
    (also for a :class:`~blocknas.search.tracking.storage.StorageError`: a storage never opened is bad input).

    Args:
        exc: The exception a command stopped on.
        stores: The storage and tracking URLs in use, named when a database reports the fault without a path.
    """
    if isinstance(exc, StorageError):  # a storage that cannot be opened says so itself, naming it
        return None
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, StorageFault):
            return current
        found = _disk_fault(current) or _database_fault(current, stores)
        if found is not None:
            return found
        pending += [current.__cause__, current.__context__]
    return None


def _disk_fault(exc: BaseException) -> StorageFault | None:
    if not isinstance(exc, OSError) or exc.errno not in DISK_ERRNOS:
        return None
    path = str(exc.filename) if exc.filename is not None else _file_written(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    if exc.filename is not None and not os.path.lexists(path):  # refused creating it: the folder is what to fix
        path = f"in {os.path.dirname(path) or '.'} (creating {os.path.basename(path)})"
    return StorageFault(
        f"cannot write {path}: {exc.strerror or os.strerror(exc.errno)} ({name}). "
        f"What to do: {DISK_ERRNOS[exc.errno]}. {_RESUME}"
    )


def _file_written(exc: OSError) -> str:
    """The file a failed ``write`` was writing (an ``OSError`` from ``write`` names none): the open file in the
    innermost frame that holds one, e.g. Optuna's journal appending a record."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str):
                return name
    return "a file of the runs folder or a store"


def _database_fault(exc: BaseException, stores: tuple[str, ...]) -> StorageFault | None:
    """A SQLite store on a disk that refuses writes, or a database server whose connection was lost."""
    orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's exception
    if orig is None:
        return None
    module = type(orig).__module__
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    if module.startswith("sqlite3") and any(s in text.lower() for s in _SQLITE_DISK_ERRORS):
        where = " or ".join(mask_url(s) for s in stores if s.startswith("sqlite:")) or "a SQLite store"
        return StorageFault(
            f"cannot write {where}: SQLite says {text!r} (a full disk, a size limit or a read-only or forbidden "
            f"folder). What to do: free space or fix the folder's permissions, or point runs_dir / --storage / "
            f"--tracking-uri at a disk that takes writes. {_RESUME}"
        )
    lost = getattr(exc, "connection_invalidated", False) or type(orig).__name__ in (
        "OperationalError",
        "InterfaceError",
    )
    if module.startswith(("psycopg", "pymysql", "MySQLdb")) and lost:
        where = " or ".join(mask_url(s) for s in stores if "://" in s and not s.startswith(("sqlite:", "http"))) or (
            "the study's database"
        )
        return StorageFault(
            f"lost the connection to {where}: {text}. What to do: check that the database server is up and "
            f"reachable from here. {_RESUME}"
        )
    return None
