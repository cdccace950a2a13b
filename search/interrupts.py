"""Ctrl-C and SIGTERM that never land inside a storage write.

Python raises ``KeyboardInterrupt`` between any two bytecodes. Raised inside Optuna's
journal-file lock, an SQLAlchemy transaction or an MLflow store call, it can leave a lock
half released or a write half done, and the error that surfaces is then no longer a
``KeyboardInterrupt`` (the study would treat it as a crashed trial and go on). The handler
installed here looks at where the main thread is: inside one of the :data:`PROTECTED_MODULES`
it only records the signal and watches (with ``sys.setprofile``, only until then) for the
outermost protected call to return; the ``KeyboardInterrupt`` is raised right there, back
in ordinary code (training, latency measurement, the search loop). A second Ctrl-C while
the first waits stops at once.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ["PROTECTED_MODULES", "in_protected_code", "install_interrupt_handlers", "interrupt_pending"]

PROTECTED_MODULES: tuple[str, ...] = (
    "optuna.storages",
    "optuna.study._tell",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "psycopg2",
    "redis",
    "sqlite3",
    "mlflow",
    "blocknas.search.files",
    "importlib._bootstrap",
)
"""Module name prefixes whose code a ``KeyboardInterrupt`` must not interrupt.

``importlib._bootstrap`` (and ``_bootstrap_external``) is the import machinery: every frame
of a module being imported runs beneath it, so a signal during an import, even a lazy one
deep inside a trial (onnxruntime, onnx, matplotlib), waits until the import is done.
Interrupted, an extension module's initialisation surfaces as an ``ImportError``, which the
study would record as a crashed trial and go on.
"""

_deferred: list[_Delivery] = []  # the signal waiting for protected code to return, if any


def in_protected_code(frame: FrameType | None) -> bool:
    """Whether ``frame`` or any of its callers runs code of a :data:`PROTECTED_MODULES` module."""
    return _outermost_protected(frame) is not None


def interrupt_pending() -> bool:
    """Whether a signal arrived inside protected code and has not been delivered yet."""
    return bool(_deferred)


def _is_protected(frame: FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.startswith(PROTECTED_MODULES)


def _outermost_protected(frame: FrameType | None) -> FrameType | None:
    outermost = None
    while frame is not None:
        if _is_protected(frame):
            outermost = frame
        frame = frame.f_back
    return outermost


class _Delivery:
    """Raise ``KeyboardInterrupt`` at the main thread's first event outside protected code.

    A profile function (``sys.setprofile``, only while a signal is deferred) waits for the
    outermost protected call to return; at the next event, in its caller, it raises. An
    exception raised by a profile function propagates into the profiled code, at that call
    or return: ordinary code. When that next event is a call into protected code again, it
    waits for that call to return instead.
    """

    def __init__(self, signum: int, target: FrameType) -> None:
        self.signum, self.target, self.previous = signum, target, sys.getprofile()
        sys.setprofile(self.until_return)

    def until_return(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "return" and frame is self.target:
            sys.setprofile(self.after_return)

    def after_return(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and _is_protected(frame):
            self.target = frame
            sys.setprofile(self.until_return)
            return
        self.cancel()
        raise KeyboardInterrupt(f"signal {self.signum}")

    def cancel(self) -> None:
        """Stop watching: the previous profile function back, nothing deferred."""
        sys.setprofile(self.previous)
        _deferred.clear()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if _deferred:  # a second signal while the first waits (a call that hangs?): stop now, wherever
        _deferred[0].cancel()
        raise KeyboardInterrupt(f"signal {signum} (repeated)")
    protected = _outermost_protected(frame)
    if protected is None:
        raise KeyboardInterrupt(f"signal {signum}")
    _deferred.append(_Delivery(signum, protected))


def install_interrupt_handlers() -> None:
    """Make SIGINT and SIGTERM raise ``KeyboardInterrupt``, but never inside a storage write.

    A second signal while the first waits for a write raises at once (the way out of a
    storage call that hangs, e.g. an unreachable server being retried). Call from the main thread (the ``blocknas`` entry point does); starts with nothing deferred.
    """
    _deferred.clear()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
