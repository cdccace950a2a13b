"""Latency: target, measurement, statistics, runtimes, device fingerprint and the per-block lookup table.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import fingerprint, measure, runtimes, stats, table, target
from .fingerprint import *  # noqa: F403
from .measure import *  # noqa: F403
from .runtimes import *  # noqa: F403
from .stats import *  # noqa: F403
from .table import *  # noqa: F403
from .target import *  # noqa: F403

__all__ = [*fingerprint.__all__, *measure.__all__, *runtimes.__all__, *stats.__all__, *table.__all__, *target.__all__]
