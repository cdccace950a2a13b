"""Tracking: MLflow runs, Optuna storage, dashboards and the doctor.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .attrs import PARENT_RUN_ATTR, RUN_ID_ATTR, WORKER_ATTR
from .claims import SETUP_COMPLETE_ATTR, Claim, Claims, FileClaims, Holder, StudyClaims, complete_setup
from .dashboard import (
    DashboardError,
    check_host,
    free_port,
    launch_mlflow_server,
    runs_page_url,
    start_mlflow_server,
    stop,
    wait_until_up,
)
from .doctor import Diagnosis, check_study, diagnose
from .journal import repair_torn_tail
from .masking import mask_config, mask_log_records, mask_url, masked_yaml
from .names import KIND_TAG, STOPPED_TAG
from .runs import StudyTracker, TrackingError, check_reachable, resolve_tracking_uri
from .storage import (
    RDB_CONNECTIONS_PER_WORKER,
    StorageError,
    dispose_storages,
    fail_abandoned_trials,
    open_storage,
    worker_id,
)

__all__ = [
    "KIND_TAG",
    "PARENT_RUN_ATTR",
    "RDB_CONNECTIONS_PER_WORKER",
    "RUN_ID_ATTR",
    "SETUP_COMPLETE_ATTR",
    "STOPPED_TAG",
    "WORKER_ATTR",
    "Claim",
    "Claims",
    "DashboardError",
    "Diagnosis",
    "FileClaims",
    "Holder",
    "StorageError",
    "StudyClaims",
    "StudyTracker",
    "TrackingError",
    "check_host",
    "check_reachable",
    "check_study",
    "complete_setup",
    "diagnose",
    "dispose_storages",
    "fail_abandoned_trials",
    "free_port",
    "launch_mlflow_server",
    "mask_config",
    "mask_log_records",
    "mask_url",
    "masked_yaml",
    "open_storage",
    "repair_torn_tail",
    "resolve_tracking_uri",
    "runs_page_url",
    "start_mlflow_server",
    "stop",
    "wait_until_up",
    "worker_id",
]
