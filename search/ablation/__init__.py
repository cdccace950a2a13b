"""Ablations: config, plan, runner, paired statistics, tables and budget matching.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import budget_match, config, plan, runner, stats, tables
from .budget_match import *  # noqa: F403
from .config import *  # noqa: F403
from .plan import *  # noqa: F403
from .runner import *  # noqa: F403
from .stats import *  # noqa: F403
from .tables import *  # noqa: F403

__all__ = [*budget_match.__all__, *config.__all__, *plan.__all__, *runner.__all__, *stats.__all__, *tables.__all__]
