"""A machine-wide gate: while one process measures latency, every trainer on the machine pauses.

Parallel trials on one machine (``blocknas workers``, ``parallel:``) train beside each other's
latency measurements; a sibling's training steps would steal the measured core's cache and
memory bandwidth and make latency depend on the schedule. So a measurement closes the gate and
waits for the training steps in flight; trainers pass the gate before each step and wait while
it is closed. Two ``flock`` files under one folder per user:

* ``gate``: a trainer takes it shared just long enough to register its step; the measurer takes
  it exclusive, so new steps wait (the measurer is never starved by a stream of short steps);
* ``busy``: each step holds it shared while it runs; the measurer takes it exclusive after
  closing the gate, so it starts once the steps in flight are done.

Locks belong to open file descriptions and vanish with their process: a killed trainer or
measurer never leaves the gate closed. ``BLOCKNAS_LATENCY_GATE=off`` turns it off.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LatencyGate", "default_gate"]

log = logging.getLogger(__name__)


class LatencyGate:
    """Measurements exclusive, training steps shared; ``paused_s`` counts the time steps waited."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._gate = os.open(self.folder / "gate", os.O_RDWR | os.O_CREAT, 0o600)
        self._busy = os.open(self.folder / "busy", os.O_RDWR | os.O_CREAT, 0o600)
        self.paused_s = 0.0
        self.pauses = 0

    @contextlib.contextmanager
    def measuring(self, wait_s: float = 60.0) -> Iterator[bool]:
        """Hold the machine for a latency measurement: no training step runs inside this block.

        Yields whether the machine is held: a sibling stopped mid-step (e.g. by ``SIGSTOP``) would
        hold its step forever, so after ``wait_s`` the measurement runs anyway, with False (logged).
        """
        deadline = time.monotonic() + wait_s
        held = [fd for fd in (self._gate, self._busy) if _lock_until(fd, deadline)]
        if len(held) < 2:
            log.warning("latency gate: training steps still ran after %.0f s; measuring beside them", wait_s)
        try:
            yield len(held) == 2
        finally:
            for fd in reversed(held):
                fcntl.flock(fd, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """One training step: waits while a measurement holds the gate (the wait is counted)."""
        try:
            fcntl.flock(self._gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            start = time.perf_counter()
            fcntl.flock(self._gate, fcntl.LOCK_SH)
            self.paused_s += time.perf_counter() - start
            self.pauses += 1
        try:
            fcntl.flock(self._busy, fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._busy, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._gate, self._busy):
            with contextlib.suppress(OSError):
                os.close(fd)


def _lock_until(fd: int, deadline: float) -> bool:
    """Take ``fd`` exclusive, polling until ``deadline``; whether it was taken."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


_LOCAL = threading.local()


def default_gate() -> LatencyGate | None:
    """This thread's gate on the machine-wide folder (``$TMPDIR/blocknas-latency-<uid>``); None when off.

    Each thread (and each forked child) opens its own descriptors: ``flock`` locks belong to an open
    file description, so two threads sharing one would share, and silently convert, each other's lock.
    """
    if os.environ.get("BLOCKNAS_LATENCY_GATE", "on").lower() in ("off", "0", "false", "no"):
        return None
    gate = getattr(_LOCAL, "gate", None)
    if gate is None or _LOCAL.pid != os.getpid():
        _LOCAL.gate = gate = LatencyGate(Path(tempfile.gettempdir()) / f"blocknas-latency-{os.getuid()}")
        _LOCAL.pid = os.getpid()
    return gate
