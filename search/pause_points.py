"""Named points where a test stops this process (``SIGSTOP``), to open a race window exactly.

A race between workers (one paused between two writes while another runs) cannot be
reproduced with sleeps without being flaky. ``$BLOCKNAS_PAUSE_AT`` names points, comma
separated; a process reaching a named point stops itself, and the test continues it with
``SIGCONT`` once the other worker has done what the window allows. Unset (always, outside
tests), a point does nothing.
"""

from __future__ import annotations

import os
import signal

__all__ = ["PAUSE_ENV", "pause_point"]

PAUSE_ENV = "BLOCKNAS_PAUSE_AT"


def pause_point(name: str) -> None:
    """Stop this process here if ``$BLOCKNAS_PAUSE_AT`` names ``name`` (it goes on at ``SIGCONT``)."""
    if name in os.environ.get(PAUSE_ENV, "").split(","):
        os.kill(os.getpid(), signal.SIGSTOP)
