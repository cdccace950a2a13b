"""Run a search: open (or resume) the Optuna study and its MLflow parent run, run trials until
the study-wide total is reached, then export the Pareto front."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from blocknas.blocks import ArchConfig, ConfigError, flatten, resolve_arch
from blocknas.search.tracking import (
    StudyTracker,
    fail_abandoned_trials,
    mask_config,
    mask_url,
    retried_trials,
)
from blocknas.spaces import SearchSpace

from .attrs import ARCH_ATTR, BASELINE_ATTR, SCREEN_POOL_ATTR, SURPLUS_ATTR
from .config import StudyConfig
from .definition import check_search_definition
from .objective import Objective
from .pareto import FrontRow, export_front, front_csv, front_rows, front_table, plot_front
from .screened import ScreenedObjective
from .screening import trial_counts_toward_total
from .start import open_study_for_run

__all__ = ["SearchResult", "SurplusTrial", "optimize_until_done", "run_search", "trial_counts"]

log = logging.getLogger(__name__)

DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class SearchResult:
    """What a search produced and where to look."""

    study: optuna.Study
    front: list[FrontRow]
    exported: list[Path]
    parent_run_id: str
    tracking_uri: str
    export_folder: Path


def _enqueue_baselines(study: optuna.Study, baselines: dict[str, ArchConfig]) -> None:
    """Queue a trial for each baseline the study has none for (a set-up step: may be half done)."""
    queued = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
    for name, arch in baselines.items():
        if name not in queued:
            study.enqueue_trial({}, user_attrs={BASELINE_ATTR: name, ARCH_ATTR: arch.to_dict()})


def _load_baselines(config: StudyConfig, space: SearchSpace) -> dict[str, ArchConfig]:
    baselines = {}
    for i, ref in enumerate(config.baselines):
        try:
            arch = resolve_arch(ref)
        except (ConfigError, KeyError) as exc:
            raise ConfigError(str(exc), path=f"baselines[{i}]", source=config.source) from None
        if tuple(arch.input_size) != tuple(space.input_size) or arch.num_classes != space.num_classes:
            raise ConfigError(
                f"baseline {ref!r} is for input {arch.input_size} and {arch.num_classes} classes, "
                f"but the space uses {space.input_size} and {space.num_classes}",
                path=f"baselines[{i}]",
                source=config.source,
            )
        baselines[Path(str(ref)).stem] = arch
    return baselines


def _counts(trial: FrozenTrial, retried: set[int]) -> bool:
    """Whether a finished trial counts toward the total (see :func:`trial_counts`)."""
    failed = trial.state == TrialState.FAIL and trial.number not in retried and SURPLUS_ATTR not in trial.user_attrs
    return (trial.state in DONE_STATES or failed) and trial_counts_toward_total(trial)


def _runs(trial: FrozenTrial) -> bool:
    """Whether a trial is in progress as one of the total's trials (not a screening pool's extra candidate)."""
    return trial.state == TrialState.RUNNING and trial.user_attrs.get(SCREEN_POOL_ATTR, trial.number) == trial.number


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """``(done, running)``: trials that count toward the total, and trials in progress.

    Complete, pruned (incl. over budget) and failed trials count; a failed trial that was
    re-enqueued for retry (its worker died) does not, its retry does, and neither does a
    surplus trial (discarded unrun, see :func:`optimize_until_done`). A screening pool counts
    once (its trained candidate); the extra candidates a running pool asked for are not running trials.
    """
    return _tally(study.get_trials(deepcopy=False))


def _tally(trials: list[FrozenTrial], below: int | None = None) -> tuple[int, int]:
    """:func:`trial_counts` of ``trials``, or of those numbered below ``below``."""
    retried = retried_trials(trials)
    counted = [t for t in trials if below is None or t.number < below]
    return sum(_counts(t, retried) for t in counted), sum(_runs(t) for t in counted)


class SurplusTrial(RuntimeError):
    """A trial numbered past the study's total: another worker started the last one at the same moment."""


def _past_total(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether ``n_trials`` trials numbered before trial ``number`` already count or run."""
    return sum(_tally(study.get_trials(deepcopy=False), below=number)) >= n_trials


def run_search(config: StudyConfig, *, progress: bool = True, allow_changed_definition: bool = False) -> SearchResult:
    """Run (or resume) the study until it holds ``config.n_trials`` finished trials.

    Everything that can be wrong with the config is checked before anything is written:
    the space, the dataset, the baselines, the storage and the tracking store. A resumed
    study must have the definition it was created with (:mod:`.definition`) unless
    ``allow_changed_definition``; its space may grow.
    """
    space = SearchSpace.load(config.space_path())
    baselines = _load_baselines(config, space)
    run = open_study_for_run(config, networks=space, what="the space", path="space")
    study = run.study
    param_names = check_search_definition(
        study, config, space, created=run.created, allow_changed=allow_changed_definition
    )
    tracker, parent = run.start_tracking(
        config,
        params=_study_params(config, space),
        config_file="study.yaml",
        set_up=lambda: _enqueue_baselines(study, baselines),
    )
    predictor = None
    if config.latency.mode == "predicted":
        from blocknas.search.latency import LatencyPredictor

        # Calibrates itself: every candidate the objective measures is stored as a calibration point.
        predictor = LatencyPredictor(config.latency, cache_dir=Path(config.runs_dir) / "latency_table")
        log.info(
            "latency predictor %s: %d calibration networks stored, calibrated from %d on",
            predictor.path,
            predictor.n_calibration_points,
            predictor.min_calibration_points,
        )
    kind = Objective if config.screen is None else ScreenedObjective
    objective = kind(
        config, space, run.data, tracker, parent, predictor=predictor, progress=progress, param_names=param_names
    )
    optimize_until_done(study, objective, n_trials=config.n_trials, timeout_s=config.timeout_s, progress=progress)
    return _finish(study, config, tracker, parent)


def optimize_until_done(
    study: optuna.Study,
    objective: Callable[[optuna.trial.Trial], Any],
    *,
    n_trials: int,
    timeout_s: float | None = None,
    progress: bool = True,
) -> None:
    """Run one trial at a time until the study holds ``n_trials`` (all workers) or ``timeout_s`` passes.

    Counting the study's trials before each new one, rather than this worker's, makes
    ``n_trials`` a study-wide total: resumes and extra workers add up to it, never past it.
    A worker whose remaining trials are in other workers' hands waits for them (or for
    them to be declared stale) instead of starting surplus trials.

    Counting and starting are two steps, so two workers that both find one trial left can
    both start one. Trial numbers are unique and ordered, so the one numbered past the total
    (``n_trials`` trials before it count or run) is discarded before it runs: FAIL with
    ``blocknas.surplus``, no MLflow run, not counted. The total is trained, never more.
    """

    def objective_within_total(trial: optuna.trial.Trial) -> Any:
        if _past_total(study, trial.number, n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(
                f"trial {trial.number} is past n_trials={n_trials}: another worker started the last trial at the "
                "same moment; discarded before it ran (not counted, no MLflow run)"
            )
        return objective(trial)

    start = time.monotonic()
    done, _ = trial_counts(study)
    bar = tqdm(
        total=n_trials,
        initial=min(done, n_trials),
        desc=f"{study.study_name} trials",
        disable=not progress,
        unit="trial",
    )
    try:
        while timeout_s is None or time.monotonic() - start < timeout_s:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            done, running = trial_counts(study)
            bar.n = min(done, n_trials)
            bar.refresh()
            if done >= n_trials:
                break
            if done + running >= n_trials:  # the rest are in other workers' hands
                time.sleep(1.0)
                fail_abandoned_trials(study)
                continue
            try:
                study.optimize(objective_within_total, n_trials=1, catch=(Exception,))
            except (ValueError, AssertionError) as exc:
                if not _failed_meanwhile(exc):
                    raise
                log.warning("the trial was failed by another worker meanwhile (a stale heartbeat) and is retried")
            bar.set_postfix(_progress_postfix(study), refresh=False)
    finally:
        bar.close()


def _failed_meanwhile(exc: BaseException | None) -> bool:
    """Whether Optuna's tell refused a trial that another worker failed meanwhile (its heartbeat looked stale).

    Optuna raises ``ValueError('Cannot tell a FAIL trial.')``; when the objective had returned
    normally, its ``_run_trial`` raises ``AssertionError('Should not reach.')`` over it (as context).
    """
    while exc is not None:
        if isinstance(exc, ValueError) and "Cannot tell a FAIL trial" in str(exc):
            return True
        exc = exc.__context__
    return False


def _progress_postfix(study: optuna.Study) -> dict[str, str]:
    rows = front_rows(study)
    if not rows:
        return {"front": "0"}
    best = max(rows, key=lambda r: r.accuracy)
    return {"best_acc": f"{best.accuracy:.3f}", "front": str(len(rows))}


def _finish(study: optuna.Study, config: StudyConfig, tracker: StudyTracker, parent: str) -> SearchResult:
    exported = export_front(study, config.export_dir)
    rows = front_rows(study)
    folder = Path(config.export_dir) / study.study_name
    plot = plot_front(study, Path(config.runs_dir) / study.study_name / "pareto.png")
    tracker.log_file(parent, plot)
    tracker.log_text(parent, front_table(rows), "pareto_front.md")
    tracker.log_text(parent, front_csv(rows), "pareto_front.csv")
    done, running = trial_counts(study)
    tracker.log(parent, metrics={"n_trials_done": done, "front_size": len(rows)})
    tracker.close_orphans(study)
    if done >= config.n_trials and running == 0:
        tracker.finish_parent(parent)
    return SearchResult(study, rows, exported, parent, tracker.tracking_uri, folder)


def _study_params(config: StudyConfig, space: SearchSpace) -> dict[str, object]:
    flat: dict[str, object] = flatten(mask_config(config.to_dict()))
    flat["storage"] = mask_url(config.storage_url)
    flat["space.size"] = space.size()
    return flat
