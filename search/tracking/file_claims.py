"""Claim files: one process at a time does a piece of work, among processes sharing a folder.

The file-system twin of :mod:`.claims` (which claims through the study storage), for work
whose results live in files: ``blocknas validate`` claims each network before training it.
A claim is the file ``<key>.<n>.claim`` holding its holder's ``host:pid``. It is made by
writing the signature to a temporary file and hard-linking it to the claim's name: ``link``
fails when the name exists, so of many processes exactly one gets it, and nobody ever reads a
claim that is not signed yet. A claim whose holder is a dead process of this host is superseded
by claim ``n + 1``, made the same way, so two processes that both find it dead cannot both take
over. Whether a process on another host lives cannot be seen from here: its claim is held until
it is released or the file deleted by hand.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path

from .claims import _local_pid
from .storage import _pid_alive, worker_id

__all__ = ["claim_file", "release_file_claims"]

log = logging.getLogger(__name__)

SUFFIX = ".claim"


def claim_file(folder: str | Path, key: str) -> str | None:
    """Claim ``key`` in ``folder`` (created): ``None`` if this process now holds it, else its holder's ``host:pid``.

    A claim this process already holds is its own (``None``); one held by a dead process of
    this host is taken over.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    me = worker_id()
    generation = 0
    while True:
        path = folder / f"{key}.{generation}{SUFFIX}"
        if _create(path, me):
            return None
        owner = _read(path)
        if owner is None:  # released between the two calls: look again from the start
            generation = 0
            continue
        if owner == me:
            return None
        pid = _local_pid(owner)
        if pid is None or _pid_alive(pid):
            return owner
        if not (folder / f"{key}.{generation + 1}{SUFFIX}").exists():
            log.warning("claim %s: holder %s is gone; taking over", path, owner)
        generation += 1


def release_file_claims(folder: str | Path, key: str) -> None:
    """Delete every claim of ``key`` in ``folder`` (the work is done: nobody needs them)."""
    for path in Path(folder).glob(f"{key}.*{SUFFIX}"):
        if path.name[len(key) + 1 : -len(SUFFIX)].isdigit():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _create(path: Path, owner: str) -> bool:
    """Make ``path`` holding ``owner``, atomically and only if it does not exist; whether it was made."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    tmp.write_text(owner)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
