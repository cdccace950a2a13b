"""Tracking: MLflow runs, Optuna storage, dashboards and the doctor.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import attrs, claims, dashboard, doctor, file_claims, journal, masking, names, runs, storage
from .attrs import *  # noqa: F403
from .claims import *  # noqa: F403
from .dashboard import *  # noqa: F403
from .doctor import *  # noqa: F403
from .file_claims import *  # noqa: F403
from .journal import *  # noqa: F403
from .masking import *  # noqa: F403
from .names import *  # noqa: F403
from .runs import *  # noqa: F403
from .storage import *  # noqa: F403

__all__ = [
    *attrs.__all__,
    *claims.__all__,
    *dashboard.__all__,
    *doctor.__all__,
    *file_claims.__all__,
    *journal.__all__,
    *masking.__all__,
    *names.__all__,
    *runs.__all__,
    *storage.__all__,
]
