"""Studies: config, runner, objective, trial attribute keys, Pareto front and workers.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import (
    attrs,
    config,
    definition,
    device,
    duplicates,
    objective,
    pareto,
    pruning,
    retry,
    runner,
    screened,
    screening,
    start,
    validation,
    validation_config,
    validation_select,
    validation_summary,
    validation_work,
    workers,
)
from .attrs import *  # noqa: F403
from .config import *  # noqa: F403
from .definition import *  # noqa: F403
from .device import *  # noqa: F403
from .duplicates import *  # noqa: F403
from .objective import *  # noqa: F403
from .pareto import *  # noqa: F403
from .pruning import *  # noqa: F403
from .retry import *  # noqa: F403
from .runner import *  # noqa: F403
from .screened import *  # noqa: F403
from .screening import *  # noqa: F403
from .start import *  # noqa: F403
from .validation import *  # noqa: F403
from .validation_config import *  # noqa: F403
from .validation_select import *  # noqa: F403
from .validation_summary import *  # noqa: F403
from .validation_work import *  # noqa: F403
from .workers import *  # noqa: F403

__all__ = [
    *attrs.__all__,
    *config.__all__,
    *definition.__all__,
    *device.__all__,
    *duplicates.__all__,
    *objective.__all__,
    *pareto.__all__,
    *pruning.__all__,
    *retry.__all__,
    *runner.__all__,
    *screened.__all__,
    *screening.__all__,
    *start.__all__,
    *validation.__all__,
    *validation_config.__all__,
    *validation_select.__all__,
    *validation_summary.__all__,
    *validation_work.__all__,
    *workers.__all__,
]
