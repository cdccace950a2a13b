"""Training: brief and full trainers, checkpoints, export and the full-training MLflow run.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import brief, checkpoint, export, full, full_config, proxies, run
from .brief import *  # noqa: F403
from .checkpoint import *  # noqa: F403
from .export import *  # noqa: F403
from .full import *  # noqa: F403
from .full_config import *  # noqa: F403
from .proxies import *  # noqa: F403
from .run import *  # noqa: F403

__all__ = [
    *brief.__all__,
    *checkpoint.__all__,
    *export.__all__,
    *full.__all__,
    *full_config.__all__,
    *proxies.__all__,
    *run.__all__,
]
