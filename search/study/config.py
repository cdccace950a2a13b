"""``StudyConfig``: one YAML file describing a whole search."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from blocknas.blocks import ConfigError, load_yaml, parse, to_plain
from blocknas.search.data import DataConfig
from blocknas.search.latency import LatencyTarget
from blocknas.search.training import TrainConfig

__all__ = ["Constraints", "FileConfig", "StudyConfig", "load_study_config"]


FileConfigT = TypeVar("FileConfigT", bound="FileConfig")


class FileConfig:
    """Loading, overriding and plain export for a frozen config dataclass read from a YAML file.

    The dataclass keeps the file it came from in a ``source`` field (not a YAML key), so
    errors found later still name that file.
    """

    source: str | None

    @classmethod
    def load(cls: type[FileConfigT], path: str | Path) -> FileConfigT:
        """Load and validate a YAML file; errors name the file and key path."""
        data = load_yaml(path)
        if isinstance(data, Mapping) and "source" in data:
            raise ConfigError("unknown key 'source'", path="source", source=str(path))
        return dataclasses.replace(parse(cls, data, source=str(path)), source=str(path))  # type: ignore[type-var]

    def with_overrides(self: FileConfigT, **overrides: Any) -> FileConfigT:
        """A validated copy with the given (non-None) top-level values replaced."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        data = {**self.to_dict(), **changes}
        return dataclasses.replace(parse(type(self), data, source=self.source), source=self.source)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``source`` field left out) that parses back into an equal config."""
        data = to_plain(self)
        data.pop("source", None)
        return dict(data)


@dataclass(frozen=True)
class Constraints:
    """Budgets checked before training; a candidate over any of them is never trained."""

    latency_ms: float | None = None
    params: int | None = None
    macs: int | None = None

    def __post_init__(self) -> None:
        for key in ("latency_ms", "params", "macs"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{value} is impossible: no network has {key} <= {value}", path=key)

    def active(self) -> dict[str, float]:
        return {k: float(v) for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class StudyConfig(FileConfig):
    """Everything a search needs: space, data, training budget, latency target, objectives, storage.

    Attributes:
        name: Study name: the Optuna study, the MLflow experiment and the export folder.
        space: A shipped space name (``tiny``, ``mobile32``) or a YAML path (relative to
            this config file or the working directory).
        objective: ``multi`` (accuracy ↑, latency ↓) or ``accuracy`` (single objective,
            latency only as a constraint; Optuna's pruners work).
        storage: Optuna storage URL or journal path; default ``<runs_dir>/optuna.journal``.
        tracking_uri: MLflow tracking URI; default ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<runs_dir>/mlflow.db``.
        n_trials: Total trials wanted for the study (all workers together, resumes included).
        baselines: Architectures (paths or preset names) evaluated first, marked as baselines.
    """

    name: str
    space: str = "tiny"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    latency: LatencyTarget = LatencyTarget()
    objective: Literal["multi", "accuracy"] = "multi"
    constraints: Constraints = Constraints()
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 0
    storage: str | None = None
    tracking_uri: str | None = None
    n_trials: int = 20
    timeout_s: float | None = None
    baselines: tuple[str, ...] = ()
    runs_dir: str = "runs"
    export_dir: str = "configs/discovered"
    heartbeat_interval_s: int = 60
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ConfigError(f"{self.name!r} must be non-empty without '/', '\\' or spaces", path="name")
        if self.n_trials < 1:
            raise ConfigError(f"{self.n_trials} must be >= 1", path="n_trials")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ConfigError(f"{self.timeout_s} must be > 0", path="timeout_s")
        if self.heartbeat_interval_s < 1:
            raise ConfigError(f"{self.heartbeat_interval_s} must be >= 1", path="heartbeat_interval_s")

    @property
    def storage_url(self) -> str:
        return self.storage or str(Path(self.runs_dir) / "optuna.journal")

    def space_path(self) -> str:
        """The space reference, resolved against the config file's folder when it is a relative path."""
        if self.source and not Path(self.space).is_absolute() and self.space.endswith((".yaml", ".yml")):
            beside = Path(self.source).parent / self.space
            if beside.is_file() and not Path(self.space).is_file():
                return str(beside)
        return self.space


def load_study_config(path: str | Path) -> StudyConfig:
    """Load and validate a study YAML file; errors name the file and key path."""
    return StudyConfig.load(path)
