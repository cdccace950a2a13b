"""Latency: target, measurement, statistics, runtimes, device fingerprint and the per-block lookup table.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import (
    agent,
    agent_client,
    calibrate,
    device,
    fingerprint,
    host,
    measure,
    ort_timing,
    runtimes,
    stats,
    table,
    target,
)
from .agent import *  # noqa: F403
from .agent_client import *  # noqa: F403
from .calibrate import *  # noqa: F403
from .device import *  # noqa: F403
from .fingerprint import *  # noqa: F403
from .host import *  # noqa: F403
from .measure import *  # noqa: F403
from .ort_timing import *  # noqa: F403
from .runtimes import *  # noqa: F403
from .stats import *  # noqa: F403
from .table import *  # noqa: F403
from .target import *  # noqa: F403

__all__ = [
    *agent.__all__,
    *agent_client.__all__,
    *calibrate.__all__,
    *device.__all__,
    *fingerprint.__all__,
    *host.__all__,
    *measure.__all__,
    *ort_timing.__all__,
    *runtimes.__all__,
    *stats.__all__,
    *table.__all__,
    *target.__all__,
]
