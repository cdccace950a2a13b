"""Training: brief and full trainers, checkpoints, export and the full-training MLflow run."""

from __future__ import annotations

from .brief import (
    BriefTrainer,
    DivergedError,
    EpochStats,
    TrainConfig,
    TrainResult,
    evaluate,
    resolve_device,
    seed_everything,
    train_briefly,
    training_threads,
)
from .checkpoint import (
    STATE_FORMAT,
    CheckpointError,
    load_model,
    load_training_state,
    load_weights,
    save_training_state,
    save_weights,
)
from .export import FORMATS, ExportError, ExportResult, export_checkpoint, export_model
from .full import RandomCropFlip, train_full
from .full_config import (
    FULL_TRAIN_DEFAULTS,
    AugmentConfig,
    EmaConfig,
    FullTrainConfig,
    FullTrainResult,
    load_train_config,
)
from .run import TrainRun

__all__ = [
    "FORMATS",
    "FULL_TRAIN_DEFAULTS",
    "STATE_FORMAT",
    "AugmentConfig",
    "BriefTrainer",
    "CheckpointError",
    "DivergedError",
    "EmaConfig",
    "EpochStats",
    "ExportError",
    "ExportResult",
    "FullTrainConfig",
    "FullTrainResult",
    "RandomCropFlip",
    "TrainConfig",
    "TrainResult",
    "TrainRun",
    "evaluate",
    "export_checkpoint",
    "export_model",
    "load_model",
    "load_train_config",
    "load_training_state",
    "load_weights",
    "resolve_device",
    "save_training_state",
    "save_weights",
    "seed_everything",
    "train_briefly",
    "train_full",
    "training_threads",
]
