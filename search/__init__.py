"""Search, ablation and reuse: studies, data, brief and full training, latency, MLflow tracking.

The public surface; each name lives in a focused module (``blocknas.search.<module>``).
Names are imported on first use, so ``blocknas --help`` and worker start-up don't pay for
MLflow, ONNX Runtime and matplotlib before they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .ablation import AblationResult, run_ablation
    from .config import Constraints, StudyConfig, load_study_config
    from .data import DataConfig, DataError, DataSplit, load_data
    from .doctor import Diagnosis, diagnose
    from .export import ExportResult, export_checkpoint, export_model
    from .full_train import FullTrainConfig, FullTrainResult, load_train_config, train_full
    from .latency import LatencyPredictor, LatencyResult, LatencyTarget, device_fingerprint, measure_latency
    from .objective import Objective
    from .pareto import FrontRow, export_front, front_rows
    from .report import ReportResult, report_study
    from .storage import StorageError, mask_url, open_storage
    from .study import SearchResult, open_study, optimize_until_done, run_search, trial_counts
    from .tracking import StudyTracker, TrackingError, resolve_tracking_uri
    from .trainer import DivergedError, EpochStats, TrainConfig, TrainResult, seed_everything, train_briefly

_EXPORTS = {
    "AblationResult": "ablation",
    "Constraints": "config",
    "DataConfig": "data",
    "DataError": "data",
    "DataSplit": "data",
    "Diagnosis": "doctor",
    "DivergedError": "trainer",
    "EpochStats": "trainer",
    "ExportResult": "export",
    "FrontRow": "pareto",
    "FullTrainConfig": "full_train",
    "FullTrainResult": "full_train",
    "LatencyPredictor": "latency",
    "LatencyResult": "latency",
    "LatencyTarget": "latency",
    "Objective": "objective",
    "ReportResult": "report",
    "SearchResult": "study",
    "StorageError": "storage",
    "StudyConfig": "config",
    "StudyTracker": "tracking",
    "TrackingError": "tracking",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "device_fingerprint": "latency",
    "diagnose": "doctor",
    "export_checkpoint": "export",
    "export_front": "pareto",
    "export_model": "export",
    "front_rows": "pareto",
    "load_data": "data",
    "load_study_config": "config",
    "load_train_config": "full_train",
    "mask_url": "storage",
    "measure_latency": "latency",
    "open_storage": "storage",
    "open_study": "study",
    "optimize_until_done": "study",
    "report_study": "report",
    "resolve_tracking_uri": "tracking",
    "run_ablation": "ablation",
    "run_search": "study",
    "seed_everything": "trainer",
    "train_briefly": "trainer",
    "train_full": "full_train",
    "trial_counts": "study",
}

__all__ = [
    "AblationResult",
    "Constraints",
    "DataConfig",
    "DataError",
    "DataSplit",
    "Diagnosis",
    "DivergedError",
    "EpochStats",
    "ExportResult",
    "FrontRow",
    "FullTrainConfig",
    "FullTrainResult",
    "LatencyPredictor",
    "LatencyResult",
    "LatencyTarget",
    "Objective",
    "ReportResult",
    "SearchResult",
    "StorageError",
    "StudyConfig",
    "StudyTracker",
    "TrackingError",
    "TrainConfig",
    "TrainResult",
    "device_fingerprint",
    "diagnose",
    "export_checkpoint",
    "export_front",
    "export_model",
    "front_rows",
    "load_data",
    "load_study_config",
    "load_train_config",
    "mask_url",
    "measure_latency",
    "open_storage",
    "open_study",
    "optimize_until_done",
    "report_study",
    "resolve_tracking_uri",
    "run_ablation",
    "run_search",
    "seed_everything",
    "train_briefly",
    "train_full",
    "trial_counts",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
