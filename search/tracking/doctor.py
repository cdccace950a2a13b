"""Consistency between the Optuna study and its MLflow runs (``blocknas doctor``).

Looking changes nothing: the study is read from a journal file as it is (a damaged record is
reported, not repaired) and MLflow is only queried. :func:`check_study` with ``repair`` mends
what has one right answer: the journal's damage (as every worker's opener does) and an MLflow
run whose status disagrees with its finished trial (Optuna's state is the truth). A trial
RUNNING in Optuna is its worker's to settle, or a resume's once that worker is gone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from .attrs import PARENT_RUN_ATTR, RUN_ID_ATTR
from .journal import bad_records, torn_tail
from .masking import mask_url
from .names import KIND_TAG, OBJECTIVE_METRICS, ROLE_TAG, STUDY_TAG, TRIAL_NUMBER_TAG, tag_equals
from .runs import RUN_STATUSES, StudyTracker, TrackingError, check_reachable
from .storage import check_local_store, journal_path, load_study

__all__ = ["REPAIRABLE", "Diagnosis", "check_study", "diagnose"]

REPAIRABLE = " (repairable with --repair)"
"""Ends the text of every problem that ``check_study(..., repair=True)`` mends."""


@dataclass
class Diagnosis:
    """What was checked and every inconsistency found (empty ``problems`` means healthy).

    ``repairs`` mend the problems marked :data:`REPAIRABLE` (each returns what it did);
    ``repaired`` lists what a repairing check did before it looked again.
    """

    trials: int = 0
    complete: int = 0
    children: int = 0
    problems: list[str] = field(default_factory=list)
    repairs: list[Callable[[], str | None]] = field(default_factory=list, repr=False)
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str, repair: Callable[[], str | None] | None = None) -> None:
        """Record a problem, and how to mend it if there is one right way."""
        self.problems.append(problem + (REPAIRABLE if repair else ""))
        if repair:
            self.repairs.append(repair)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def diagnose(study: optuna.Study, tracker: StudyTracker) -> Diagnosis:
    """Every finished trial has exactly one MLflow child with the same metrics, and vice versa.

    A failed trial that never got a run (its worker was killed between asking for it and
    creating the run) has none, and that is consistent.

    Also: exactly one parent run for the study, and no child left RUNNING for a trial
    that is no longer running.
    """
    result = Diagnosis()
    parent_id = study.user_attrs.get(PARENT_RUN_ATTR)
    parents = tracker.client.search_runs(
        [tracker.experiment_id], f"{tag_equals(STUDY_TAG, study.study_name)} and {tag_equals(ROLE_TAG, 'study')}"
    )
    if not parent_id:
        result.problems.append("study has no MLflow parent run id in its user attributes")
        return result
    if [r.info.run_id for r in parents] != [parent_id]:
        result.problems.append(f"expected exactly one parent run {parent_id}, found {[r.info.run_id for r in parents]}")
    children = [run for run in tracker.children(parent_id) if KIND_TAG not in run.data.tags]  # trials' runs only
    result.children = len(children)
    by_trial: dict[int, list] = {}
    for run in children:
        number = run.data.tags.get(TRIAL_NUMBER_TAG)
        if number is None or not number.isdigit():
            result.problems.append(f"child run {run.info.run_id} has no {TRIAL_NUMBER_TAG} tag")
            continue
        by_trial.setdefault(int(number), []).append(run)
    trials = study.get_trials(deepcopy=False)
    result.trials = len(trials)
    numbers = {t.number for t in trials}
    for number in sorted(set(by_trial) - numbers):
        result.problems.append(f"MLflow child runs for trial {number}, which the study does not have")
    metric_names = OBJECTIVE_METRICS[: len(study.directions)]
    for trial in trials:
        runs = by_trial.get(trial.number, [])
        if trial.state in (TrialState.WAITING,):
            continue
        if trial.state == TrialState.FAIL and not runs and RUN_ID_ATTR not in trial.user_attrs:
            continue  # its worker died before the trial's run was created: nothing to match
        if len(runs) != 1:
            result.problems.append(f"trial {trial.number} ({trial.state.name}) has {len(runs)} MLflow child runs")
            continue
        run = runs[0]
        unrecorded = trial.state == TrialState.FAIL and RUN_ID_ATTR not in trial.user_attrs
        if trial.user_attrs.get(RUN_ID_ATTR) != run.info.run_id and not unrecorded:
            # (unrecorded: its worker made the run, then lost the study storage or was killed before recording it)
            result.problems.append(
                f"trial {trial.number} points to run {trial.user_attrs.get(RUN_ID_ATTR)}, child is {run.info.run_id}"
            )
        _check_status(result, tracker, trial, run)
        if trial.state == TrialState.COMPLETE:
            result.complete += 1
            for name, value in zip(metric_names, trial.values):
                logged = run.data.metrics.get(name)
                if logged is None or not _close(logged, value):
                    result.problems.append(f"trial {trial.number}: {name} is {value} in Optuna but {logged} in MLflow")
    return result


def _check_status(result: Diagnosis, tracker: StudyTracker, trial: FrozenTrial, run: Any) -> None:
    """The trial's run has a status that agrees with the trial's state (:data:`RUN_STATUSES`)."""
    status, agreeing = run.info.status, RUN_STATUSES.get(trial.state, ())
    if status in agreeing:
        return
    problem = (
        f"trial {trial.number} is {trial.state.name} in Optuna but its run {run.info.run_id} is {status} in MLflow"
    )
    if trial.state == TrialState.RUNNING:
        result.add(f"{problem} (its worker, or a resume once that worker is gone, ends the trial)")
    else:
        result.add(problem, partial(tracker.settle_run, run.info.run_id, trial.state))


def _journal_damage(storage_url: str) -> list[str]:
    """What Optuna could not read in the study's journal file (none for a database), read without changing it."""
    path = journal_path(storage_url)
    if path is None:
        return []
    bad, torn = bad_records(path), torn_tail(path)
    if bad and torn == len(bad[-1].raw) and path.read_bytes().endswith(bad[-1].raw):
        bad.pop()  # the last line: reported (and repaired) as the torn record it is
    found = [
        f"journal {path}: line {record.line} is not a readable record ({len(record.raw)} bytes"
        + ("; a complete record after a torn write in it is kept" if record.kept else "")
        + ")"
        for record in bad
    ]
    if torn:
        found.append(f"journal {path}: ends in a torn record ({torn} bytes, a write cut short)")
    return found


def check_study(
    study_name: str, *, storage_url: str, tracking_uri: str, runs_dir: str | Path = "runs", repair: bool = False
) -> Diagnosis:
    """Load a study and its MLflow experiment, creating and changing neither, and ``diagnose`` them.

    Args:
        study_name: The Optuna study, which is also the MLflow experiment name.
        storage_url: Where the study is (journal path, ``sqlite:///``, ``postgresql://``, ...).
        tracking_uri: Where its MLflow runs are.
        runs_dir: The study's runs folder (MLflow artifacts of a local store).
        repair: Mend the problems marked :data:`REPAIRABLE` (the journal's damage is moved aside
            as a worker's opener does), then look again; ``repaired`` says what was done.

    Raises:
        FileNotFoundError: No journal file or SQLite database at the given path.
        StorageError: No study of that name; the message lists the studies there are.
    """
    check_local_store(storage_url, "study storage")
    damage = _journal_damage(storage_url)  # read before the study is opened, which with ``repair`` mends it
    study = load_study(study_name, storage_url, read_only=not repair)
    result = _check_stores(study, study_name, tracking_uri, runs_dir)
    if not repair:
        result.problems[:0] = [problem + REPAIRABLE for problem in damage]
        return result
    repaired = [f"{problem}: moved aside" for problem in damage] + [done for mend in result.repairs if (done := mend())]
    if result.repairs:
        result = _check_stores(study, study_name, tracking_uri, runs_dir)
    result.repaired = repaired
    return result


def _check_stores(study: optuna.Study, study_name: str, tracking_uri: str, runs_dir: str | Path) -> Diagnosis:
    """The study's MLflow experiment exists and is active, then :func:`diagnose` (the store is only read)."""
    check_local_store(tracking_uri, "MLflow runs store")
    check_reachable(tracking_uri)
    try:
        experiment = MlflowClient(tracking_uri).get_experiment_by_name(study_name)
    except Exception as exc:
        raise TrackingError(mask_url(f"cannot read MLflow tracking store {tracking_uri}: {exc}")) from None
    if experiment is None or experiment.lifecycle_stage != "active":
        state = "no" if experiment is None else "only a deleted"
        problem = f"{state} MLflow experiment {study_name!r} in {mask_url(tracking_uri)}"
        return Diagnosis(trials=len(study.trials), problems=[problem])
    return diagnose(study, StudyTracker(tracking_uri, study_name, runs_dir=runs_dir))
