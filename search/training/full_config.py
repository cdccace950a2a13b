"""Full-training configuration and result: ``configs/train/*.yaml`` and what a run returns.

Kept apart from the trainer so the MLflow run (:mod:`.run`) and the trainer both use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blocknas.blocks import ArchConfig, ConfigError
from blocknas.blocks.schema import check_range
from blocknas.search.data import DataConfig
from blocknas.search.files import check_safe_name
from blocknas.search.seeding import check_seed
from blocknas.search.yaml_config import FileConfig

from .brief import TrainConfig

__all__ = [
    "FULL_TRAIN_DEFAULTS",
    "MAX_CROP_PADDING",
    "AugmentConfig",
    "EmaConfig",
    "FullTrainConfig",
    "FullTrainResult",
    "load_train_config",
]

MAX_CROP_PADDING = 256
"""Largest random-crop padding, in pixels."""

# A real budget; a ``train:`` mapping in a config file is merged over these, not over TrainConfig's brief defaults.
FULL_TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 0.004,
    "weight_decay": 0.05,
    "schedule": "cosine",
    "warmup_epochs": 0.5,
    "label_smoothing": 0.1,
}


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of in-memory, normalized batches (small images).

    Attributes:
        crop_padding: Random crop after zero padding by this many pixels at the network's
            input size (zero is the dataset mean after normalization); 0 disables it.
        hflip: Random horizontal flip; ``null`` means on for natural images and garments
            (cifar10, cifar100, imagefolder, fashion_mnist) and off for digits (digits, mnist,
            kmnist) and synthetic data.
    """

    crop_padding: int = 4
    hflip: bool | None = None

    def __post_init__(self) -> None:
        check_range(self.crop_padding, "crop_padding", 0, MAX_CROP_PADDING, hint=" (0: no random crop)")


@dataclass(frozen=True)
class EmaConfig:
    """Exponential moving average of the weights (timm's ``ModelEmaV3``, decay warm-up on).

    When enabled, the EMA weights are the ones validated, checkpointed as best and exported.

    Attributes:
        enabled: Keep the average (its weights are then the ones validated and exported).
        decay: The average's decay per step.
    """

    enabled: bool = False
    decay: float = 0.998

    def __post_init__(self) -> None:
        if not 0 < self.decay < 1:
            raise ConfigError(f"{self.decay} must be in (0, 1), e.g. 0.998", path="decay")


@dataclass(frozen=True)
class FullTrainConfig(FileConfig):
    """One full training run (``configs/train/*.yaml``).

    Attributes:
        arch: Anything :func:`blocknas.blocks.resolve_arch` accepts: a YAML path, an inline
            mapping, a registered model name, ``<study>/<name>`` or ``runs:/<run_id>``.
        name: Run name; default: derived from ``arch`` (a discovered ``<study>/<prefix>`` gives
            the full name of the config it names, e.g. ``t0012_ab12cd34``).
        data: The dataset; default (null): the data the architecture was searched or trained
            on, as its ``meta`` records it (:func:`~blocknas.search.training.searched_data`).
        out_dir: Checkpoint folder; default ``<runs_dir>/train/<name>``.
        tracking: Log an MLflow run (experiment ``experiment``).
        tracking_uri: Default ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs_dir>/mlflow.db``.
        seed: Seed of the weight initialisation, the data order and the augmentation.
        runs_dir: Local folder for the runs, the default MLflow store and the checkpoints.
        experiment: The MLflow experiment the run is logged in.
        weights_format: File type of the weights-only checkpoints.
    """

    arch: str | dict[str, Any] | None = None
    name: str | None = None
    data: DataConfig | None = None
    train: TrainConfig = TrainConfig(**FULL_TRAIN_DEFAULTS)
    augment: AugmentConfig = AugmentConfig()
    ema: EmaConfig = EmaConfig()
    seed: int = 0
    out_dir: str | None = None
    runs_dir: str = "runs"
    tracking: bool = True
    tracking_uri: str | None = None
    experiment: str = "train"
    weights_format: Literal["safetensors", "pth"] = "safetensors"
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.train.time_budget_s is not None:
            raise ConfigError(
                "full training runs for a number of epochs; remove time_budget_s", path="train.time_budget_s"
            )
        if self.name is not None:
            check_safe_name(self.name, folder=Path(self.runs_dir) / "train")
        check_seed(self.seed)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None) -> FullTrainConfig:
        """Parse a mapping; its ``train:`` keys override :data:`FULL_TRAIN_DEFAULTS`."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"expected a mapping, got {type(data).__name__}", source=source)
        train = data.get("train") or {}
        if isinstance(train, Mapping):
            data = {**data, "train": {**FULL_TRAIN_DEFAULTS, **train}}
        return super().from_dict(data, source=source)

    def with_overrides(self, **overrides: Any) -> FullTrainConfig:
        """A validated copy with non-None values replaced (``epochs``, ``batch_size``, ``lr`` in ``train``; ``dataset`` is ``data.name``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("epochs", "batch_size", "lr"):
                data["train"][key] = value
            elif key == "dataset":
                data["data"] = {**(data["data"] or {}), "name": value}
            else:
                data[key] = value
        return self.from_dict(data, source=self.source)

    def run_name(self, arch: ArchConfig) -> str:
        """``name``, else the file or config name in ``arch``, else the architecture's hash.

        ``arch`` is the architecture as resolved, before any change for the data; a unique
        prefix of a front config (``default/t0012``) names the config's full name, as
        :func:`~blocknas.search.study.export_front` wrote it.
        """
        if self.name:
            return self.name
        if isinstance(self.arch, str):
            last = self.arch.rstrip("/").replace(":", "").split("/")[-1]
            last = last.removesuffix(".yaml").removesuffix(".yml")
            trial = arch.meta.get("trial")
            exported = f"t{trial:04d}_{arch.short_hash()}" if isinstance(trial, int) else ""
            return exported if last and exported.startswith(last) else last or arch.short_hash()
        return arch.short_hash()

    def output_dir(self, arch: ArchConfig) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(self.runs_dir) / "train" / self.run_name(arch)


def load_train_config(path: str | Path) -> FullTrainConfig:
    """Load and validate a training YAML file; errors name the file and key path."""
    return FullTrainConfig.load(path)


@dataclass(frozen=True)
class FullTrainResult:
    """What a full training produced: the best and final validation top-1, the files, the MLflow run."""

    out_dir: Path
    best_accuracy: float
    best_epoch: int
    final_accuracy: float
    history: tuple[dict[str, float], ...]
    weights: Path
    arch_path: Path
    run_id: str | None
    resumed_from_epoch: int | None = None
