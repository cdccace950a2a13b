"""``blocknas validate``: does the search's brief score rank networks as a longer training budget does?

After a search, the Pareto front and K random other complete trials are retrained with the
study's own recipe (trainer, data split, schedule shape and seed) at a longer budget (the
``validate:`` block or flags; default ``DEFAULT_EPOCHS_FACTOR`` × the study's epochs on the same
data), and once more at the search's own budget with the next seed. The result
(:class:`~.validation_summary.Validation`) is Kendall τ and Spearman ρ between the trials' scores
and the longer accuracy with bootstrap intervals, the same against the rerun (the noise floor),
and which front networks stay non-dominated on (longer accuracy ↑, latency ↓).

Everything that can be wrong (no such study, fewer than ``MIN_VALIDATED`` usable trials, no
MLflow parent run, a bad budget) is found before anything is written. Finished trainings are
kept in ``<runs_dir>/<study>/validate/results.jsonl`` (:mod:`.validation_work`), so a rerun
trains only what is missing and processes started together share the work. The result is an
MLflow child run of the study's parent run (tag ``blocknas.kind=validate``; one per budget,
updated by a rerun) with the metrics of :meth:`Validation.metrics` and the artifacts
``validate.json`` and ``validate.md``; ``blocknas report`` shows it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import timm
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from blocknas.blocks import ConfigError
from blocknas.search.data import load_data
from blocknas.search.files import atomic_write_text
from blocknas.search.seeding import MAX_SEED
from blocknas.search.tracking import (
    KIND_TAG,
    PARENT_RUN_ATTR,
    FileClaims,
    StudyTracker,
    TrackingError,
    check_reachable,
    mask_url,
    resolve_tracking_uri,
)
from blocknas.search.tracking.names import STUDY_TAG, VALIDATE_BUDGET_TAG, tag_equals
from blocknas.search.tracking.storage import check_local_store, load_study
from blocknas.search.training import DivergedError, seed_everything, train_briefly

from .attrs import ARCH_ATTR
from .config import StudyConfig
from .definition import definition_settings
from .duplicates import training_key
from .validation_config import DEFAULT_EPOCHS_FACTOR, MIN_VALIDATED
from .validation_select import SelectedNetwork, select_networks
from .validation_summary import TrainingBudget, ValidatedNetwork, Validation, summarize
from .validation_work import Retraining, TrainingRecords, retrain_all

__all__ = ["VALIDATE_KIND", "ValidatePlan", "ValidateResult", "longer_study", "plan_validation", "run_validation"]

log = logging.getLogger(__name__)

VALIDATE_KIND = "validate"  # the KIND_TAG of a validation's MLflow run


@dataclass(frozen=True)
class ValidatePlan:
    """A checked validation, before anything is written: the networks, their trainings and where results go."""

    config: StudyConfig
    networks: list[SelectedNetwork]
    jobs: list[Retraining]
    budgets: tuple[TrainingBudget, TrainingBudget, TrainingBudget]  # the search's, the longer one, the noise floor's
    folder: Path
    tracking_uri: str
    parent_run_id: str
    budget_key: str


@dataclass(frozen=True)
class ValidateResult:
    """What a validation found and where it went."""

    validation: Validation
    run_id: str
    parent_run_id: str
    tracking_uri: str
    folder: Path
    trained: int  # trainings this process ran (the rest were recorded earlier or by another process)
    trainings: int


def longer_study(config: StudyConfig) -> StudyConfig:
    """``config`` with the validation's longer budget as its training and data (no time budget).

    Raises:
        ConfigError: the budget is invalid (key path under ``validate``).
    """
    settings = config.validate
    epochs = settings.epochs or DEFAULT_EPOCHS_FACTOR * config.train.epochs
    images = config.data.max_train_samples if settings.train_images is None else settings.train_images
    try:
        train = dataclasses.replace(config.train, epochs=epochs, time_budget_s=None)
        data = dataclasses.replace(config.data, max_train_samples=images)
    except ConfigError as exc:
        raise exc.within("validate", config.source) from None
    return dataclasses.replace(config, train=train, data=data)


def plan_validation(config: StudyConfig, *, max_front: int | None = None) -> ValidatePlan:
    """Check everything ``run_validation`` needs and choose the networks; writes nothing.

    Raises:
        FileNotFoundError: no study storage or MLflow store at the configured path.
        StorageError: no such study.
        TrackingError: the study has no MLflow parent run, or the store does not have it.
        ConfigError: fewer than ``MIN_VALIDATED`` usable networks, more random ones asked for than
            the study has, or a bad budget.
        DataError: the longer budget's data cannot be loaded.
    """
    study = load_study(config.name, config.storage_url)
    _check_trials(study)
    tracking_uri = resolve_tracking_uri(config.tracking_uri, config.runs_dir)
    parent_run_id = _check_parent_run(study, tracking_uri)
    settings = config.validate
    try:
        networks = select_networks(study, random_count=settings.random, seed=settings.seed, max_front=max_front)
    except ConfigError as exc:  # the count may come from a flag: no file named
        raise exc.within("validate") from None
    if len(networks) < MIN_VALIDATED:
        raise ConfigError(
            f"study {config.name!r} has {len(networks)} distinct architectures to retrain (front and random ones); "
            f"a rank correlation needs at least {MIN_VALIDATED}: run more trials or ask for more random ones",
            path="validate.random",
        )
    longer = longer_study(config)
    noise_seed = config.seed + 1 if config.seed < MAX_SEED else config.seed - 1
    for net, data in itertools.product(networks, (config.data, longer.data)):  # cached: loaded once, now, so a
        load_data(data, input_size=net.arch.input_size, in_chans=net.arch.in_chans)  # bad dataset writes nothing
    jobs = [_job("longer", net, longer, config.seed) for net in networks]
    jobs += [_job("noise", net, config, noise_seed) for net in networks]
    budgets = (_budget(config, config.seed), _budget(longer, config.seed), _budget(config, noise_seed))
    digest = json.dumps([definition_settings(longer), [dataclasses.asdict(b) for b in budgets], settings.seed])
    return ValidatePlan(
        config,
        networks,
        jobs,
        budgets,
        Path(config.runs_dir) / config.name / "validate",
        tracking_uri,
        parent_run_id,
        hashlib.sha1(digest.encode()).hexdigest()[:16],
    )


def run_validation(
    config: StudyConfig, *, progress: bool = False, poll_s: float = 2.0, max_front: int | None = None
) -> ValidateResult:
    """Retrain the study's front and random trials at the longer budget and record what they say.

    Args:
        config: The study's config; its ``validate`` block sets the budget and the random count.
        progress: Show a progress bar per training.
        poll_s: Seconds between looks while another process holds the trainings left.
        max_front: Most front networks retrained (spread over the front's latency range; ``None``: all).
    """
    plan = plan_validation(config, max_front=max_front)
    store = TrainingRecords(plan.folder)
    trained = retrain_all(plan.jobs, store, functools.partial(_train, progress=progress), poll_s=poll_s)
    validation = _summarize(plan, store.read())
    run_id = _publish(plan, validation, poll_s=poll_s)
    return ValidateResult(
        validation, run_id, plan.parent_run_id, plan.tracking_uri, plan.folder, trained, len(plan.jobs)
    )


def _check_trials(study: optuna.Study) -> None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    usable = [t for t in complete if ARCH_ATTR in t.user_attrs]
    if len(usable) < MIN_VALIDATED:
        raise ConfigError(
            f"study {study.study_name!r} has {len(usable)} complete trial(s); validation needs at least "
            f"{MIN_VALIDATED} to rank: run more (blocknas search --n-trials N), then validate"
        )


def _check_parent_run(study: optuna.Study, tracking_uri: str) -> str:
    """The study's MLflow parent run id, checked to exist in the store (which is not created)."""
    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if not parent:
        raise TrackingError(f"study {study.study_name!r} has no MLflow parent run: was it made by blocknas search?")
    check_local_store(tracking_uri, "MLflow runs store")
    check_reachable(tracking_uri)
    try:
        MlflowClient(tracking_uri).get_run(str(parent))
    except Exception as exc:
        raise TrackingError(
            mask_url(f"the study's MLflow parent run {parent} is not in {tracking_uri} (check --tracking-uri): {exc}")
        ) from None
    return str(parent)


def _job(kind: str, net: SelectedNetwork, config: StudyConfig, seed: int) -> Retraining:
    key = training_key(net.arch, seed, definition_settings(config))
    return Retraining(key, kind, net, config.train, config.data, seed)


def _budget(config: StudyConfig, seed: int) -> TrainingBudget:
    return TrainingBudget(config.train.epochs, config.data.max_train_samples, seed)


def _train(job: Retraining, *, progress: bool) -> tuple[float, float]:
    """Validation top-1 and seconds of the search's recipe (``Objective``'s seeding) under the job's budget."""
    arch = job.network.arch
    data = load_data(job.data, input_size=arch.input_size, in_chans=arch.in_chans)
    seed_everything(job.seed)
    model = timm.create_model("blocknet", arch=arch)
    start = time.perf_counter()
    try:
        result = train_briefly(model, data, job.train, seed=job.seed, progress=progress)
    except DivergedError as exc:  # a result too: no accuracy, and the rank correlations leave it out
        log.warning("trial %d diverged under the %s budget: %s", job.network.trial, job.kind, exc)
        return float("nan"), time.perf_counter() - start
    return result.val_accuracy, result.train_seconds


def _summarize(plan: ValidatePlan, records: dict[str, dict[str, Any]]) -> Validation:
    by_kind = {(job.kind, job.network.trial): records[job.key]["accuracy"] for job in plan.jobs}
    networks = [
        ValidatedNetwork(
            net.trial,
            net.on_front,
            net.label,
            net.latency_ms,
            net.params,
            net.score,
            by_kind["longer", net.trial],
            by_kind["noise", net.trial],
        )
        for net in plan.networks
    ]
    settings = plan.config.validate
    return summarize(plan.config.name, plan.budgets, networks, seed=settings.seed, n_boot=settings.bootstrap)


def _publish(plan: ValidatePlan, validation: Validation, *, poll_s: float) -> str:
    """Log ``validation`` on the study's validation run for this budget (made once), and beside the results."""
    markdown, data = validation.markdown(), json.dumps(validation.to_json(), indent=1)
    atomic_write_text(plan.folder / "validate.md", markdown)
    atomic_write_text(plan.folder / "validate.json", data)
    tracker = StudyTracker(plan.tracking_uri, plan.config.name, runs_dir=plan.config.runs_dir)
    claims, key = FileClaims(plan.folder / "claims"), f"publish-{plan.budget_key}"
    while (holder := claims.claim(key).holder) is not None:
        log.info("waiting for %s to log the validation on MLflow", holder)
        time.sleep(poll_s)
    try:
        run_id = _validation_run(tracker, plan)
        brief, longer, noise = plan.budgets
        params = {"epochs": longer.epochs, "train_images": longer.train_images, "brief_epochs": brief.epochs}
        params |= {"seed": longer.seed, "noise_seed": noise.seed, "validate_seed": plan.config.validate.seed}
        tracker.log(run_id, params=params, metrics=validation.metrics())
        tracker.log_text(run_id, data, "validate.json")
        tracker.log_text(run_id, markdown, "validate.md")
        tracker.end_run(run_id, "FINISHED")
    finally:
        claims.release(key)
    return run_id


def _validation_run(tracker: StudyTracker, plan: ValidatePlan) -> str:
    """The MLflow run of this validation budget under the study's parent run; created the first time."""
    tags = {MLFLOW_PARENT_RUN_ID: plan.parent_run_id, KIND_TAG: VALIDATE_KIND, VALIDATE_BUDGET_TAG: plan.budget_key}
    query = " and ".join(tag_equals(tag, value) for tag, value in tags.items())
    found = tracker.client.search_runs([tracker.experiment_id], query, max_results=1)
    if found:
        return str(found[0].info.run_id)
    epochs = plan.budgets[1].epochs
    tags[STUDY_TAG] = plan.config.name
    run_id = tracker.create_run(run_name=f"validate-{epochs}ep", tags=tags)
    log.info("created MLflow run %s for the validation of study %s", run_id, plan.config.name)
    return run_id
