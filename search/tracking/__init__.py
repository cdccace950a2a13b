"""Tracking: MLflow runs, Optuna storage, dashboards and the doctor."""

from __future__ import annotations

from .dashboard import (
    DEFAULT_HOST,
    DashboardError,
    check_host,
    free_port,
    launch_mlflow_server,
    mlflow_server_command,
    run_optuna_dashboard,
    runs_page_url,
    start_mlflow_server,
    stop,
    wait_until_up,
)
from .doctor import Diagnosis, check_study, diagnose
from .journal import open_journal_backend, repair_torn_tail
from .runs import PARENT_RUN_ATTR, RUN_ID_ATTR, StudyTracker, TrackingError, check_reachable, resolve_tracking_uri
from .storage import WORKER_ATTR, StorageError, fail_dead_local_trials, load_study, mask_url, open_storage, worker_id

__all__ = [
    "DEFAULT_HOST",
    "DashboardError",
    "Diagnosis",
    "PARENT_RUN_ATTR",
    "RUN_ID_ATTR",
    "StorageError",
    "StudyTracker",
    "TrackingError",
    "WORKER_ATTR",
    "check_host",
    "check_reachable",
    "check_study",
    "diagnose",
    "fail_dead_local_trials",
    "free_port",
    "launch_mlflow_server",
    "load_study",
    "mask_url",
    "mlflow_server_command",
    "open_journal_backend",
    "open_storage",
    "repair_torn_tail",
    "resolve_tracking_uri",
    "run_optuna_dashboard",
    "runs_page_url",
    "start_mlflow_server",
    "stop",
    "wait_until_up",
    "worker_id",
]
