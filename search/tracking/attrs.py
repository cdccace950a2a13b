"""The study and trial attributes tracking reads and writes, and reading them back.

The keys that only the search itself uses are in :mod:`blocknas.search.study.attrs`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial

__all__ = [
    "PARENT_RUN_ATTR",
    "PARENT_TOKEN_ATTR",
    "RETRY_HISTORY_ATTR",
    "RUN_ID_ATTR",
    "WORKER_ATTR",
    "retried_trials",
    "wait_for_user_attr",
]

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
PARENT_TOKEN_ATTR = "blocknas.parent_token"  # study user attr and parent-run tag: finds a parent left unstored
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow child run
WORKER_ATTR = "blocknas.worker"  # trial user attr: ``host:pid`` of the worker that ran it
RETRY_HISTORY_ATTR = "retry_history"  # Optuna's system attr: the trial numbers a retry stands for


def retried_trials(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the trials that Optuna re-enqueued as a retry (their worker died): their retries count instead."""
    return {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_ATTR, ())}


def wait_for_user_attr(study: optuna.Study, key: str, wait_s: float, *, poll_s: float = 0.5) -> Any:
    """The study's user attribute ``key``, waiting up to ``wait_s`` for another worker to set it.

    Returns:
        The value, or ``None`` if it is still unset after ``wait_s`` (0: look once).
    """
    deadline = time.monotonic() + wait_s
    while True:
        value = study.user_attrs.get(key)
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(poll_s)
