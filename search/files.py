"""Files shared by processes on one machine: an exclusive advisory lock, writes readers never see half done,
and names that are safe as one path component."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from blocknas.blocks import ConfigError

__all__ = ["atomic_write", "atomic_write_text", "check_safe_name", "file_lock"]


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


def check_safe_name(name: str, *, path: str = "name") -> None:
    """Refuse a name that is not exactly one folder or file name, since names become paths.

    Raises:
        ConfigError: ``name`` is empty, ``.`` or ``..``, or has a ``/``, ``\\`` or control
            character; ``path`` is the key path reported.
    """
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if name in ("", ".", "..") or bad:
        why = f"contains {bad[0]!r}" if bad else "is empty" if not name else "names no folder of its own"
        raise ConfigError(
            f"{name!r} {why}: a name becomes a folder, so it must be non-empty, not '.' or '..', "
            "and without '/', '\\' or control characters",
            path=path,
        )


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
