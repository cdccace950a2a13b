"""Opening a study for a run, as a search and an ablation both do: check the stores and the data,
open (or create) the Optuna study, then complete its MLflow set-up once across workers."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import optuna
from optuna.storages import BaseStorage

from blocknas.blocks import ArchConfig, ConfigError
from blocknas.search.data import DataError, DataSplit
from blocknas.search.data.splits import load_data_for
from blocknas.search.pause_points import pause_point
from blocknas.search.tracking import (
    STOPPED_TAG,
    StudyTracker,
    TrackingError,
    complete_setup,
    fail_abandoned_trials,
    mask_url,
    masked_yaml,
    open_storage,
    resolve_tracking_uri,
)
from blocknas.search.tracking.names import OBJECTIVE_METRICS
from blocknas.search.tracking.runs import check_tracking_store
from blocknas.spaces import SearchSpace

from .config import StudyBase, StudyConfig

__all__ = ["StudyRun", "attempt", "make_sampler", "open_study", "open_study_for_run", "raise_problems"]

PROBLEMS = (ConfigError, DataError, TrackingError, FileNotFoundError)
"""What is wrong with a config, its data or its stores (as opposed to a bug): collected, then reported at once."""
T = TypeVar("T")


def attempt(problems: list[Exception], step: Callable[[], T]) -> T | None:
    """``step()``; or, when it finds a problem (:data:`PROBLEMS`), None and the problem added to ``problems``.

    A run checks every part of its config this way, so one run reports every problem, not one per run.
    """
    try:
        return step()
    except PROBLEMS as exc:
        problems.append(exc)
        return None


def raise_problems(problems: Sequence[Exception]) -> None:
    """Raise the one problem as it is, or a :class:`ConfigError` listing them all; nothing when there is none."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"{len(problems)} problems, each to fix before the study starts:\n{listing}")


def make_sampler(config: StudyConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The config's sampler (the study's, and a screening pool's throwaway study's). None takes a ``constraints_func``: since Optuna 5 every sampler reads the
    budgets the objective records with ``trial.set_constraint`` (``FrozenTrial.constraints``) itself."""
    startup = min(10, max(2, config.n_trials // 3))
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        # define-by-run: a block's own knobs are outside the trials' common space and drawn at random,
        # as the GP documents; its warning for each would repeat every trial
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a single-objective study; a multi-objective one has none (Optuna cannot
    prune those: ``pareto_asha`` is run by the objective itself, see :mod:`.pruning`)."""
    if config.objective == "multi" or config.pruner in ("none", "pareto_asha"):
        return optuna.pruners.NopPruner()
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.train.epochs)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def open_study(config: StudyConfig, *, storage: BaseStorage | None = None) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists; returns ``(study, created_here)``.

    Creation is atomic in Optuna's storage, so among many workers exactly one creates it.
    That worker samples with ``config.seed``; the others add their pid so they don't
    propose identical trials. ``storage`` is ``config``'s, already opened (else it is opened here).
    """
    storage = storage or open_storage(config.storage_url, heartbeat_interval=config.heartbeat_interval_s)
    directions: list[Literal["minimize", "maximize"]] = (
        ["maximize", "minimize"] if config.objective == "multi" else ["maximize"]
    )
    try:
        study = optuna.create_study(
            study_name=config.name,
            storage=storage,
            directions=directions,
            sampler=make_sampler(config, config.seed),
            pruner=_pruner(config),
        )
        pause_point("study-created")  # a test's race window: created, its definition not yet stored
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(OBJECTIVE_METRICS[: len(directions)]))
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(
            study_name=config.name,
            storage=storage,
            sampler=make_sampler(config, config.seed + os.getpid()),
            pruner=_pruner(config),
        )
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(
            f"study {config.name!r} in {mask_url(config.storage_url)} has directions {found}, but objective "
            f"{config.objective!r} needs {directions}; use another study name",
            path="objective",
            source=config.source,
        )
    return study, False


@dataclass(frozen=True)
class StudyRun:
    """A study opened for a run, with its storage, the MLflow store its runs go to and its data.

    Attributes:
        study: The Optuna study.
        storage: Its storage, opened once for the study and the set-up claim.
        created: Whether this worker created the study.
        tracking_uri: The checked MLflow tracking store.
        data: The dataset, checked against the networks the run builds.
    """

    study: optuna.Study
    storage: BaseStorage
    created: bool
    tracking_uri: str
    data: DataSplit

    def start_tracking(
        self,
        config: StudyBase,
        *,
        params: Mapping[str, object],
        config_file: str,
        tags: Mapping[str, str] | None = None,
        set_up: Callable[[], None] = lambda: None,
    ) -> tuple[StudyTracker, str]:
        """Complete the study's set-up once across workers, then recover what dead workers left.

        The set-up steps are the parent run (with ``params`` and ``tags``), ``config`` logged on
        it as ``config_file`` (masked) and the caller's own ``set_up``; each skips what a worker
        that died had done. Then trials whose workers are gone are failed and their runs closed.

        Returns:
            ``(tracker, parent run id)``.
        """
        study = self.study
        tracker = StudyTracker(self.tracking_uri, config.name, runs_dir=config.runs_dir)

        def steps() -> None:
            parent = tracker.ensure_parent(study, params=params)
            if tags:
                tracker.log(parent, tags=tags)
            if not tracker.has_artifact(parent, config_file):
                tracker.log_text(parent, masked_yaml(config.to_dict()), config_file)
            set_up()

        complete_setup(study, self.storage, steps)
        parent = tracker.ensure_parent(study, params={})  # stored by now: only reopened
        if STOPPED_TAG in tracker.client.get_run(parent).data.tags:  # running again: an earlier ending no longer holds
            tracker.client.delete_tag(parent, STOPPED_TAG)
        fail_abandoned_trials(study)
        tracker.close_orphans(study)
        return tracker, parent


def open_study_for_run(
    config: StudyConfig,
    *,
    networks: SearchSpace | ArchConfig | None,
    what: str,
    path: str,
    problems: Sequence[Exception] = (),
) -> StudyRun:
    """Check the tracking store and the data, then open (or create) the study.

    Everything is checked before a study, a run or a file is made; the storage last, since
    opening a journal file creates it. Every problem found, ``problems`` (the caller's) included,
    is reported in one error.

    Args:
        config: The study's settings.
        networks: What the run builds networks from: the shape it pins (input size, channels,
            classes; a space may pin none, then the data's is used). None: it could not be read.
        what, path: The networks' origin and its config key path, for a dataset that does not fit.
        problems: What the caller found wrong already.
    """
    found = list(problems)
    tracking_uri = resolve_tracking_uri(config.tracking_uri, config.runs_dir)
    attempt(found, lambda: check_tracking_store(tracking_uri))
    data = attempt(
        found,
        lambda: load_data_for(
            config.data,
            input_size=getattr(networks, "input_size", None),
            in_chans=getattr(networks, "in_chans", None),
            num_classes=getattr(networks, "num_classes", None),
            what=what,
            path=path,
            source=config.source,
        ),
    )
    raise_problems(found)
    assert data is not None  # else a problem was raised
    storage = open_storage(config.storage_url, heartbeat_interval=config.heartbeat_interval_s)
    study, created = open_study(config, storage=storage)
    return StudyRun(study, storage, created, tracking_uri, data)
