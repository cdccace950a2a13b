"""The study and trial attributes tracking reads and writes.

The keys that only the search itself uses are in :mod:`blocknas.search.study.attrs`.
"""

from __future__ import annotations

__all__ = [
    "PARENT_RUN_ATTR",
    "PARENT_TOKEN_ATTR",
    "RETRY_HISTORY_ATTR",
    "RUN_ID_ATTR",
    "WORKER_ATTR",
]

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr: the study's MLflow parent run
PARENT_TOKEN_ATTR = "blocknas.parent_token"  # study user attr and parent-run tag: finds a parent left unstored
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow child run
WORKER_ATTR = "blocknas.worker"  # trial user attr: ``host:pid`` of the worker that ran it
RETRY_HISTORY_ATTR = "retry_history"  # Optuna's system attr: the trial numbers a retry stands for
