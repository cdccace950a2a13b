"""Tracking: MLflow runs, Optuna storage, dashboards and the doctor."""

from __future__ import annotations

from .attrs import PARENT_RUN_ATTR, RETRY_HISTORY_ATTR, RUN_ID_ATTR, WORKER_ATTR, retried_trials, wait_for_user_attr
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
from .masking import mask_config, mask_log_records, mask_url, masked_yaml, remember_secrets
from .runs import StudyTracker, TrackingError, check_reachable, resolve_tracking_uri
from .storage import (
    RDB_CONNECTIONS_PER_WORKER,
    StorageError,
    dispose_storages,
    fail_dead_local_trials,
    load_study,
    open_storage,
    worker_id,
)

__all__ = [
    "DEFAULT_HOST",
    "PARENT_RUN_ATTR",
    "RDB_CONNECTIONS_PER_WORKER",
    "RETRY_HISTORY_ATTR",
    "RUN_ID_ATTR",
    "WORKER_ATTR",
    "DashboardError",
    "Diagnosis",
    "StorageError",
    "StudyTracker",
    "TrackingError",
    "check_host",
    "check_reachable",
    "check_study",
    "diagnose",
    "dispose_storages",
    "fail_dead_local_trials",
    "free_port",
    "launch_mlflow_server",
    "load_study",
    "mask_config",
    "mask_log_records",
    "mask_url",
    "masked_yaml",
    "mlflow_server_command",
    "open_journal_backend",
    "open_storage",
    "remember_secrets",
    "repair_torn_tail",
    "resolve_tracking_uri",
    "retried_trials",
    "run_optuna_dashboard",
    "runs_page_url",
    "start_mlflow_server",
    "stop",
    "wait_for_user_attr",
    "wait_until_up",
    "worker_id",
]
