"""Training: brief and full trainers, checkpoints, export and the full-training MLflow run.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .brief import (
    DivergedError,
    EpochStats,
    TrainConfig,
    TrainResult,
    evaluate,
    seed_everything,
    train_briefly,
    training_threads,
)
from .checkpoint import CheckpointError, load_model, load_training_state, load_weights, save_weights
from .export import ExportResult, export_checkpoint, export_model
from .full import FullTrainer, RandomCropFlip, searched_data, train_full
from .full_config import AugmentConfig, EmaConfig, FullTrainConfig, FullTrainResult, load_train_config
from .proxies import DEFAULT_PROXIES, UnknownProxyError, get_proxy, list_proxies, proxy_batch, score_proxies
from .run import TrainRun

__all__ = [
    "DEFAULT_PROXIES",
    "AugmentConfig",
    "CheckpointError",
    "DivergedError",
    "EmaConfig",
    "EpochStats",
    "ExportResult",
    "FullTrainConfig",
    "FullTrainResult",
    "FullTrainer",
    "RandomCropFlip",
    "TrainConfig",
    "TrainResult",
    "TrainRun",
    "UnknownProxyError",
    "evaluate",
    "export_checkpoint",
    "export_model",
    "get_proxy",
    "list_proxies",
    "load_model",
    "load_train_config",
    "load_training_state",
    "load_weights",
    "proxy_batch",
    "save_weights",
    "score_proxies",
    "searched_data",
    "seed_everything",
    "train_briefly",
    "train_full",
    "training_threads",
]
