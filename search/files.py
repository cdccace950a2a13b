"""Files shared by processes on one machine: an exclusive advisory lock, writes readers never see half done,
and names that are safe as one path component."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import excerpt

__all__ = ["MAX_NAME_BYTES", "atomic_write", "atomic_write_text", "check_safe_name", "file_lock"]

MAX_NAME_BYTES = 100
"""Longest study or run name, in UTF-8 bytes (less where the filesystem allows fewer): it names folders."""
_ROOM_BELOW = 128  # bytes of path blocknas may add below <folder>/<name>: report/, downloads, temporary files


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A reader sees the old file or the new one, never a partial one, and a kill mid-write
    leaves ``path`` as it was. The folder is created if needed; the temporary file is
    removed when ``write`` fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # unique per writer, so two processes writing one path never share a temporary file;
    # created by ``write`` itself, so it gets the usual permissions (mkstemp's are 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` with :func:`atomic_write`: the old file or the new one, never half of it."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def check_safe_name(name: str, *, path: str = "name", folder: str | Path = ".") -> None:
    """Refuse a name that is not exactly one folder or file name, since names become paths.

    Checked before anything is written, so a name that cannot be created fails at once, not
    in the export after a trial has trained.

    Args:
        name: The name, used as ``<folder>/<name>``.
        path: The key path reported.
        folder: Where it becomes a folder (need not exist yet): its filesystem's limits apply.

    Raises:
        ConfigError: ``name`` is empty, ``.`` or ``..``, or has a ``/``, ``\\`` or control
            character; is longer than :data:`MAX_NAME_BYTES` or the filesystem's ``NAME_MAX``;
            or ``<folder>/<name>`` leaves too little room below the filesystem's ``PATH_MAX``.
    """
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if name in ("", ".", "..") or bad:
        why = f"contains {bad[0]!r}" if bad else "is empty" if not name else "names no folder of its own"
        raise ConfigError(
            f"{excerpt(name)} {why}: a name becomes a folder, so it must be non-empty, not '.' or '..', "
            "and without '/', '\\' or control characters",
            path=path,
        )
    size, limit = len(os.fsencode(name)), min(MAX_NAME_BYTES, _fs_limit(folder, "PC_NAME_MAX", 255))
    if size > limit:
        raise ConfigError(
            f"{excerpt(name)} is {size} bytes long; a name becomes a folder, so at most {limit} bytes", path=path
        )
    deep = len(os.fsencode(os.path.abspath(os.path.join(folder, name)))) + _ROOM_BELOW
    if deep > (limit := _fs_limit(folder, "PC_PATH_MAX", 4096)):
        raise ConfigError(
            f"{excerpt(os.path.join(folder, name))} with the files below it would take {deep:,} bytes of path, "
            f"more than the filesystem allows ({limit:,}); use a shorter folder or name",
            path=path,
        )


def _fs_limit(folder: str | Path, key: str, default: int) -> int:
    """``os.pathconf(key)`` of the filesystem ``folder`` is (or will be) on: that of its nearest existing ancestor."""
    here = Path(os.path.abspath(folder))
    for candidate in (here, *here.parents):
        try:
            value = os.pathconf(candidate, key)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except (OSError, ValueError):  # a name too long to look up, or no such limit on this OS
            return default
        return value if value > 0 else default
    return default


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if missing) for the block.

    A no-op where the OS has no ``fcntl``; the lock file itself is left in place.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
