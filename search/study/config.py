"""``StudyConfig``: one YAML file describing a whole search."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import check_range
from blocknas.search.data import DataConfig
from blocknas.search.files import check_safe_name
from blocknas.search.latency import LatencyTarget
from blocknas.search.seeding import check_seed
from blocknas.search.training import DEFAULT_PROXIES, TrainConfig
from blocknas.search.yaml_config import FileConfig

from .pruning import MAX_TRIALS, PruningConfig
from .screening import ScreenConfig, check_proxies
from .validation_config import ValidateConfig
from .workers import MAX_WORKERS

__all__ = [
    "MAX_HEARTBEAT_S",
    "MAX_TIMEOUT_S",
    "Constraints",
    "StudyBase",
    "StudyConfig",
    "default_storage_url",
    "load_study_config",
]
MAX_TIMEOUT_S = 365 * 24 * 3600.0
"""Longest ``timeout_s``: a year."""
MAX_HEARTBEAT_S = 24 * 3600
"""Longest ``heartbeat_interval_s``: a day."""


def default_storage_url(runs_dir: str | Path) -> str:
    """Where a study lives when no storage is given: the journal file ``<runs_dir>/optuna.journal``."""
    return str(Path(runs_dir) / "optuna.journal")


@dataclass(frozen=True, kw_only=True)
class StudyBase(FileConfig):
    """What a search and an ablation share: the study's name, where it and its runs are stored, how long it runs.

    Attributes:
        name: The Optuna study, the MLflow experiment and the name of its folders.
        storage: Optuna storage URL or journal path; default ``<runs_dir>/optuna.journal``.
        tracking_uri: MLflow tracking URI; default ``$MLFLOW_TRACKING_URI`` or
            ``sqlite:///<runs_dir>/mlflow.db``.
        timeout_s: Stop starting trials after this many seconds (this worker).
        runs_dir: Local folder for the journal, the MLflow store, artifacts and reports.
        heartbeat_interval_s: Seconds between trial heartbeats on RDB storage.
    """

    name: str
    storage: str | None = None
    tracking_uri: str | None = None
    timeout_s: float | None = None
    runs_dir: str = "runs"
    heartbeat_interval_s: int = 60
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_safe_name(self.name, folder=self.runs_dir)
        if " " in self.name:
            raise ConfigError(f"{self.name!r} must be without spaces", path="name")
        if self.timeout_s is not None:
            check_range(self.timeout_s, "timeout_s", 0, MAX_TIMEOUT_S, above=True)
        check_range(self.heartbeat_interval_s, "heartbeat_interval_s", 1, MAX_HEARTBEAT_S)

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage_url(self.runs_dir)

    def stores(self) -> dict[str, Any]:
        """The shared fields' values, to build another :class:`StudyBase` for the same study."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(StudyBase)}


@dataclass(frozen=True)
class Constraints:
    """Budgets checked before training; a candidate over any of them is never trained.

    Attributes:
        latency_ms: Most milliseconds per call: the measured p50 (one measurement, then rejected
            untrained), or with ``latency.mode: predicted`` the prediction (rejected before it is built).
        params: Most parameters; checked from the formulas, before the network is built.
        macs: Most multiply-accumulates per image; checked like ``params``.
    """

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
class StudyConfig(StudyBase):
    """Everything a search needs: space, data, training budget, latency target, objectives, storage.

    The study's name and stores are :class:`StudyBase`'s.

    Attributes:
        space: A shipped space name (``tiny``, ``mobile32``) or a YAML path (relative to
            this config file or the working directory).
        objective: ``multi`` (accuracy ↑, latency ↓) or ``accuracy`` (single objective,
            latency only as a constraint; Optuna's pruners work).
        pruner: ``auto`` (default: ``median`` for a single objective, ``none`` for ``multi``),
            ``median`` | ``hyperband`` (Optuna's, single objective only: refused with ``multi``,
            where they would stop nothing), ``none``, or ``pareto_asha`` (multi objective only:
            Pareto-aware successive halving).
        pruning: Settings of ``pareto_asha`` (:class:`PruningConfig`).
        seed: Seed of the sampler and of every trial's training (the same for all trials, so they
            compare fairly); later workers add their pid to the sampler's.
        n_trials: Total trials wanted for the study (all workers together, resumes included).
        baselines: Architectures (paths or preset names) evaluated first, marked as baselines.
        export_dir: Where the Pareto front is written, as ``<export_dir>/<name>/``.
        proxies: Zero-cost proxies logged for every trial that is built (null: ``DEFAULT_PROXIES``,
            those costing under 1 s per mobile32 network; ``[]``: none).
        screen: ``{proxy: auto | <name>, pool: K}``, experimental (proxies mostly track network
            size; not shown to pay): each trial draws K candidates (2-256), scores them by the
            proxy and trains only the best, all within that one trial (null: off). See :mod:`.screened`.
        validate: The longer budget ``blocknas validate`` retrains at (:class:`ValidateConfig`).
        score: What a trial's accuracy objective is: ``accuracy``, the final top-1 of the trained
            weights, or ``ema_accuracy``, that of their exponential moving average (needs
            ``train.ema_decay``; costs one more validation). ``benchmarks/groundtruth.py`` measures
            how each ranks networks against full training; both are logged to MLflow.
        sampler: ``tpe``, ``nsga2``, ``random`` or ``gp`` (Optuna's ``GPSampler``); each respects the budgets
            the objective records with ``trial.set_constraint``.
        parallel: Trials at once on this machine, as local worker processes on the study's storage:
            ``auto`` (as many as the cores allow with ``train.threads`` × workers ≤ cores, or
            ``$BLOCKNAS_PARALLEL``), or a number (1: one process). See :func:`.workers.plan_parallel`.
    """

    space: str = "tiny"
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    latency: LatencyTarget = LatencyTarget()
    objective: Literal["multi", "accuracy"] = "multi"
    constraints: Constraints = Constraints()
    sampler: Literal["tpe", "nsga2", "random", "gp"] = "tpe"
    pruner: Literal["auto", "median", "hyperband", "none", "pareto_asha"] = "auto"
    pruning: PruningConfig = PruningConfig()
    seed: int = 0
    n_trials: int = 20
    baselines: tuple[str, ...] = ()
    export_dir: str = "configs/discovered"
    proxies: tuple[str, ...] | None = None
    screen: ScreenConfig | None = None
    validate: ValidateConfig = ValidateConfig()
    score: Literal["accuracy", "ema_accuracy"] = "accuracy"
    parallel: Literal["auto"] | int = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parallel != "auto":
            check_range(self.parallel, "parallel", 1, MAX_WORKERS, hint=" (or auto: as many as the cores allow)")
        if self.score == "ema_accuracy" and self.train.ema_decay is None:
            raise ConfigError(
                "score: ema_accuracy scores the EMA of the weights: set train.ema_decay (e.g. 0.99)", path="score"
            )
        if self.proxies is not None:
            check_proxies(self.proxies)
        check_safe_name(self.name, folder=self.export_dir)
        check_range(self.n_trials, "n_trials", 1, MAX_TRIALS)
        check_seed(self.seed)
        self._check_pruner()

    def _check_pruner(self) -> None:
        """``auto`` resolves by objective; ``pareto_asha`` needs the multi objective and a first rung inside the
        training budget; ``median`` and ``hyperband`` a single objective (they would prune nothing on ``multi``)."""
        if self.pruner == "pareto_asha" and self.objective != "multi":
            raise ConfigError(
                "pareto_asha ranks accuracy against latency and needs objective: multi; a single-objective "
                "study uses median, hyperband or none",
                path="pruner",
            )
        if self.pruner == "auto":
            object.__setattr__(self, "pruner", "median" if self.objective == "accuracy" else "none")
        if self.pruner in ("median", "hyperband") and self.objective == "multi":
            raise ConfigError(
                f"{self.pruner} cannot prune a multi-objective study (Optuna's pruners need one objective), so "
                "it would stop nothing; use pareto_asha (Pareto-aware successive halving) or none, or objective: "
                "accuracy",
                path="pruner",
            )
        if self.pruning != PruningConfig() and self.pruner != "pareto_asha":
            raise ConfigError(f"settings for pruner: pareto_asha, but pruner is {self.pruner!r}", path="pruning")
        if self.pruner == "pareto_asha" and self.pruning.min_epochs >= self.train.epochs:
            raise ConfigError(
                f"{self.pruning.min_epochs} leaves no rung below the training budget of "
                f"train.epochs={self.train.epochs}; use fewer, or more epochs",
                path="pruning.min_epochs",
            )

    def proxy_names(self) -> tuple[str, ...]:
        """The proxies each trial computes: the ``proxies:`` list (default ``DEFAULT_PROXIES``) plus the screen's."""
        names = DEFAULT_PROXIES if self.proxies is None else self.proxies
        extra = [] if self.screen is None or self.screen.proxy in ("auto", *names) else [self.screen.proxy]
        if self.screen is not None and self.screen.proxy == "auto" and "params" not in names:
            extra.append("params")
        return (*names, *extra)

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
