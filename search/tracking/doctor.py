"""Consistency between the Optuna study and its MLflow runs (``blocknas doctor``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from .attrs import KIND_TAG, PARENT_RUN_ATTR, RUN_ID_ATTR
from .masking import mask_url
from .runs import StudyTracker, TrackingError, check_reachable
from .storage import check_local_store, load_study

__all__ = ["Diagnosis", "check_study", "diagnose"]


@dataclass
class Diagnosis:
    """What was checked and every inconsistency found (empty ``problems`` means healthy)."""

    trials: int = 0
    complete: int = 0
    children: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


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
        [tracker.experiment_id], f"tags.`blocknas.study` = '{study.study_name}' and tags.`blocknas.role` = 'study'"
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
        number = run.data.tags.get("optuna.trial_number")
        if number is None or not number.isdigit():
            result.problems.append(f"child run {run.info.run_id} has no optuna.trial_number tag")
            continue
        by_trial.setdefault(int(number), []).append(run)
    trials = study.get_trials(deepcopy=False)
    result.trials = len(trials)
    numbers = {t.number for t in trials}
    for number in sorted(set(by_trial) - numbers):
        result.problems.append(f"MLflow child runs for trial {number}, which the study does not have")
    metric_names = ["accuracy", "latency_ms"][: len(study.directions)]
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
        if trial.user_attrs.get(RUN_ID_ATTR) != run.info.run_id:
            result.problems.append(
                f"trial {trial.number} points to run {trial.user_attrs.get(RUN_ID_ATTR)}, child is {run.info.run_id}"
            )
        if trial.state != TrialState.RUNNING and run.info.status == "RUNNING":
            result.problems.append(f"trial {trial.number} is {trial.state.name} but its run is still RUNNING")
        if trial.state == TrialState.COMPLETE:
            result.complete += 1
            for name, value in zip(metric_names, trial.values):
                logged = run.data.metrics.get(name)
                if logged is None or not _close(logged, value):
                    result.problems.append(f"trial {trial.number}: {name} is {value} in Optuna but {logged} in MLflow")
    return result


def check_study(study_name: str, *, storage_url: str, tracking_uri: str, runs_dir: str | Path = "runs") -> Diagnosis:
    """Load a study and its MLflow experiment, creating neither, and ``diagnose`` them.

    Args:
        study_name: The Optuna study, which is also the MLflow experiment name.
        storage_url: Where the study is (journal path, ``sqlite:///``, ``postgresql://``, ...).
        tracking_uri: Where its MLflow runs are.
        runs_dir: The study's runs folder (MLflow artifacts of a local store).

    Raises:
        FileNotFoundError: No journal file or SQLite database at the given path.
        StorageError: No study of that name; the message lists the studies there are.
    """
    study = load_study(study_name, storage_url)
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
