"""Search, ablation and reuse: studies, data, brief and full training, latency, MLflow tracking.

The public surface; each name lives in one subpackage (``blocknas.search.<subsystem>``),
which re-exports it. Names are imported on first use, so ``blocknas --help`` and worker
start-up don't pay for torch, MLflow, ONNX Runtime and matplotlib before they need them; the
``TYPE_CHECKING`` imports give mypy and IDEs the same names with their types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for mypy and IDEs (tests/test_public_api.py checks they agree)
    from .ablation import AblationResult, run_ablation
    from .data import DataConfig, DataError, DataSplit, load_data
    from .latency import LatencyPredictor, LatencyResult, LatencyTarget, device_fingerprint, measure_latency
    from .report import ReportResult, report_study
    from .study import (
        Constraints,
        FrontRow,
        Objective,
        SearchResult,
        StudyConfig,
        export_front,
        front_rows,
        load_study_config,
        open_study,
        optimize_until_done,
        run_search,
        trial_counts,
    )
    from .tracking import (
        Diagnosis,
        StorageError,
        StudyTracker,
        TrackingError,
        diagnose,
        mask_url,
        open_storage,
        resolve_tracking_uri,
    )
    from .training import (
        DivergedError,
        EpochStats,
        ExportResult,
        FullTrainConfig,
        FullTrainResult,
        TrainConfig,
        TrainResult,
        export_checkpoint,
        export_model,
        load_train_config,
        seed_everything,
        train_briefly,
        train_full,
    )

_EXPORTS: dict[str, tuple[str, ...]] = {
    "ablation": ("AblationResult", "run_ablation"),
    "data": ("DataConfig", "DataError", "DataSplit", "load_data"),
    "latency": ("LatencyPredictor", "LatencyResult", "LatencyTarget", "device_fingerprint", "measure_latency"),
    "report": ("ReportResult", "report_study"),
    "study": (
        "Constraints",
        "FrontRow",
        "Objective",
        "SearchResult",
        "StudyConfig",
        "export_front",
        "front_rows",
        "load_study_config",
        "open_study",
        "optimize_until_done",
        "run_search",
        "trial_counts",
    ),
    "tracking": (
        "Diagnosis",
        "StorageError",
        "StudyTracker",
        "TrackingError",
        "diagnose",
        "mask_url",
        "open_storage",
        "resolve_tracking_uri",
    ),
    "training": (
        "DivergedError",
        "EpochStats",
        "ExportResult",
        "FullTrainConfig",
        "FullTrainResult",
        "TrainConfig",
        "TrainResult",
        "export_checkpoint",
        "export_model",
        "load_train_config",
        "seed_everything",
        "train_briefly",
        "train_full",
    ),
}
_HOME = {name: subpackage for subpackage, names in _EXPORTS.items() for name in names}

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
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
