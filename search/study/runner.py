"""Run a search: open (or resume) the Optuna study and its MLflow parent run, run trials until
the study-wide total is reached, then export the Pareto front."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from tqdm.auto import tqdm

from blocknas.blocks import ArchConfig, ConfigError, resolve_arch
from blocknas.blocks.schema import flatten
from blocknas.search.data import Preprocessing
from blocknas.search.latency.device import latency_device
from blocknas.search.tracking import (
    PARENT_RUN_ATTR,
    STOPPED_TAG,
    WORKER_ATTR,
    StudyTracker,
    fail_abandoned_trials,
    mask_config,
    mask_url,
    resolve_tracking_uri,
    worker_id,
)
from blocknas.search.tracking.faults import storage_fault
from blocknas.search.tracking.storage import load_study
from blocknas.spaces import SearchSpace

from .attrs import ARCH_ATTR, BASELINE_ATTR, SURPLUS_ATTR
from .config import StudyBase, StudyConfig
from .definition import check_search_definition
from .device import check_device, record_device
from .duplicates import release_training_claims
from .objective import Objective
from .pareto import FrontRow, export_front, front_csv, front_rows, front_table, plot_front
from .screened import ScreenedObjective
from .start import attempt, open_study_for_run
from .tally import past_total, trial_counts

__all__ = [
    "SearchResult",
    "SurplusTrial",
    "end_parent_after",
    "ending_text",
    "optimize_until_done",
    "run_search",
    "search_result",
    "storage_faults_named",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """What a search produced and where to look."""

    study: optuna.Study
    front: list[FrontRow]
    exported: list[Path]
    parent_run_id: str
    tracking_uri: str
    export_folder: Path
    ending: str | None = None
    """Why the study ended below its ``n_trials`` (``stopped by timeout at 18/30; rerun to continue``), else None."""


def ending_text(stopped_by: str, done: int, n_trials: int) -> str:
    """What a study that ended below its total says: why, where, and that a rerun continues it."""
    return f"stopped by {stopped_by} at {done}/{n_trials}; rerun to continue"


def _enqueue_baselines(study: optuna.Study, baselines: dict[str, ArchConfig]) -> None:
    """Queue a trial for each baseline the study has none for (a set-up step: may be half done)."""
    queued = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
    for name, arch in baselines.items():
        if name not in queued:
            study.enqueue_trial({}, user_attrs={BASELINE_ATTR: name, ARCH_ATTR: arch.to_dict()})


def _load_baselines(config: StudyConfig, problems: list[Exception]) -> dict[str, ArchConfig]:
    """The baselines that resolve, by name; each one that does not is added to ``problems``."""
    baselines = {}
    for i, ref in enumerate(config.baselines):
        try:
            baselines[Path(str(ref)).stem] = resolve_arch(ref)
        except (ConfigError, KeyError) as exc:
            problems.append(ConfigError(str(exc).strip('"'), path=f"baselines[{i}]", source=config.source))
    return baselines


def _for_shape(arch: ArchConfig, space: SearchSpace) -> ArchConfig:
    """A baseline rebuilt for the networks the space builds: their input size, channels and classes."""
    return arch.replace(in_chans=space.in_chans, num_classes=space.num_classes, input_size=space.input_size)


class SurplusTrial(RuntimeError):
    """A trial numbered past the study's total: another worker started the last one at the same moment."""


def run_search(
    config: StudyConfig,
    *,
    progress: bool = True,
    allow_changed_definition: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> SearchResult:
    """Run (or resume) the study until it holds ``config.n_trials`` finished trials.

    A store that cannot be written or reached (a full disk, a forbidden folder, a lost
    database connection) raises :class:`~blocknas.search.tracking.faults.StorageFault`, one
    paragraph naming it; the trial it cut short is retried by the next run.
    """
    with storage_faults_named(config):
        return _run_search(
            config, progress=progress, allow_changed_definition=allow_changed_definition, on_ready=on_ready
        )


@contextlib.contextmanager
def storage_faults_named(config: StudyBase) -> Iterator[None]:
    """Raise an exception that stands for a storage fault as its
    :class:`~blocknas.search.tracking.faults.StorageFault` paragraph, naming the study's storage and
    tracking store where a database reports it without a path (a search's and an ablation's run)."""
    try:
        yield
    except Exception as exc:
        stores = config.storage_url, resolve_tracking_uri(config.tracking_uri, config.runs_dir)
        fault = storage_fault(exc, stores=stores)
        if fault is None or fault is exc:
            raise
        raise fault from exc


def _run_search(
    config: StudyConfig,
    *,
    progress: bool = True,
    allow_changed_definition: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> SearchResult:
    """:func:`run_search` without turning storage faults into one paragraph.

    Everything that can be wrong with the config is checked before anything is written, and
    reported in one error: the space, the dataset, the baselines and the tracking store (the
    storage last). The networks, baselines included, are built for the data's shape where the
    space does not pin it. A resumed
    study must have the definition it was created with (:mod:`.definition`) unless
    ``allow_changed_definition``; its space may grow. ``on_ready`` is called once the study is
    checked and set up, just before the first trial (``blocknas search`` starts its other workers there).
    """
    problems: list[Exception] = []
    space = attempt(problems, lambda: SearchSpace.load(config.space_path()))
    baselines = _load_baselines(config, problems)
    device = attempt(problems, lambda: latency_device(config.latency))  # an agent must answer first
    run = open_study_for_run(
        config, networks=space, what=f"the space {config.space!r}", path="space", problems=problems
    )
    assert space is not None  # else open_study_for_run raised the problem
    space = space.for_data(run.data)
    baselines = {name: _for_shape(arch, space) for name, arch in baselines.items()}
    study = run.study
    param_names = check_search_definition(run.storage, study, config, space, allow_changed=allow_changed_definition)
    assert device is not None  # else open_study_for_run raised the problem
    check_device(study, device, allow_changed=allow_changed_definition)
    tracker, parent = run.start_tracking(
        config,
        params=_study_params(config, space),
        config_file="study.yaml",
        set_up=lambda: _enqueue_baselines(study, baselines),
    )
    record_device(study, tracker, parent, device)
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
    try:
        if on_ready is not None:
            on_ready()
        timed_out = optimize_until_done(
            study, objective, n_trials=config.n_trials, timeout_s=config.timeout_s, progress=progress
        )
    except BaseException as exc:
        end_parent_after(exc, study, tracker, parent, config.n_trials)
        raise
    ending = "timeout" if timed_out else None
    return _finish(study, config, tracker, parent, ending, Preprocessing.of(run.data))


def optimize_until_done(
    study: optuna.Study,
    objective: Callable[[optuna.trial.Trial], Any],
    *,
    n_trials: int,
    timeout_s: float | None = None,
    progress: bool = True,
) -> bool:
    """Run one trial at a time until the study holds ``n_trials`` (all workers) or ``timeout_s`` passes.

    Returns whether ``timeout_s`` passed before the study held ``n_trials``.

    Counting the study's trials before each new one, rather than this worker's, makes
    ``n_trials`` a study-wide total: resumes and extra workers add up to it, never past it.
    A worker whose remaining trials are in other workers' hands waits for them (or for
    them to be declared stale) instead of starting surplus trials.

    Counting and starting are two steps, so two workers that both find one trial left can
    both start one. Trial numbers are unique and ordered, so the one numbered past the total
    (``n_trials`` trials before it count or run) is discarded before it runs: FAIL with
    ``blocknas.surplus``, no MLflow run, not counted. The total is trained, never more.
    """

    faults: list[Exception] = []

    def objective_within_total(trial: optuna.trial.Trial) -> Any:
        if past_total(study.get_trials(deepcopy=False), trial.number, n_trials):
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise SurplusTrial(
                f"trial {trial.number} is past n_trials={n_trials}: another worker started the last trial at the "
                "same moment; discarded before it ran (not counted, no MLflow run)"
            )
        try:
            return objective(trial)
        except Exception as exc:
            if storage_fault(exc) is not None:  # the worker stops once Optuna has failed the trial (retry queued)
                faults.append(exc)
            raise

    start = time.monotonic()
    done, _ = trial_counts(study)
    bar = tqdm(
        total=n_trials,
        initial=min(done, n_trials),
        desc=f"{study.study_name} trials",
        disable=not progress,
        unit="trial",
    )
    quiet = _NoFaultTracebacks()
    logging.getLogger("optuna.study._optimize").addFilter(quiet)
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
            if faults:
                raise faults[0]
            release_training_claims(study)  # the trial is told (its result recorded): its claim is not needed
            bar.set_postfix(_progress_postfix(study), refresh=False)
        else:
            return trial_counts(study)[0] < n_trials
    finally:
        logging.getLogger("optuna.study._optimize").removeFilter(quiet)
        bar.close()
    return False


class _NoFaultTracebacks(logging.Filter):
    """Drops Optuna's "Trial N failed" warning, a traceback, for a trial a storage fault or an interrupt (Ctrl-C,
    SIGTERM) cut short, or a surplus trial discarded before it ran: the worker says each in one paragraph or line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not (isinstance(exc, (KeyboardInterrupt, SurplusTrial)) or storage_fault(exc))


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


def end_parent(study: optuna.Study, tracker: StudyTracker, parent: str, n_trials: int, stopped_by: str | None) -> None:
    """End the parent run when no worker runs a trial any more: FINISHED at the total, else KILLED (a timeout,
    an interrupt) or FAILED (an error) with the reason in :data:`STOPPED_TAG`. While another worker still
    runs a trial the run stays RUNNING: the last worker to stop ends it (a trial of this worker's that a
    storage fault left RUNNING is not another worker's)."""
    done, _ = trial_counts(study)
    me = worker_id()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if any(t.user_attrs.get(WORKER_ATTR) != me for t in running):
        return
    if done >= n_trials:
        tracker.finish_parent(parent)
        return
    reason = ending_text(stopped_by or "the worker's exit", done, n_trials)
    tracker.log(parent, tags={STOPPED_TAG: reason})
    tracker.finish_parent(parent, "FAILED" if stopped_by and stopped_by.startswith("an error") else "KILLED")
    log.warning("study %s %s", study.study_name, reason)


def end_parent_after(
    exc: BaseException, study: optuna.Study, tracker: StudyTracker, parent: str, n_trials: int
) -> None:
    """:func:`end_parent` for a worker (of a search or an ablation) leaving on ``exc``, its study short of
    ``n_trials`` counted trials; a failure to do so is logged, never raised over ``exc``.

    A storage fault names itself in the reason; when it keeps the study's trials from being counted
    (a lost database), the parent run is ended FAILED with that reason all the same.
    """
    fault = storage_fault(exc)
    if isinstance(exc, KeyboardInterrupt):
        why = "interrupt (Ctrl-C or SIGTERM)"
    elif fault is not None:
        why = f"an error: a storage fault ({str(fault).split(' What to do:')[0]})"
    else:
        why = f"an error ({type(exc).__name__}: {exc})"
    try:
        try:
            end_parent(study, tracker, parent, n_trials, why)
        except Exception as error:
            if fault is None or storage_fault(error) is None:
                raise
            tracker.log(parent, tags={STOPPED_TAG: f"stopped by {why}; rerun to continue"})
            tracker.finish_parent(parent, "FAILED")
    except Exception as error:
        log.warning("could not end the MLflow parent run %s of study %s: %s", parent, study.study_name, error)


def _finish(
    study: optuna.Study,
    config: StudyConfig,
    tracker: StudyTracker,
    parent: str,
    stopped_by: str | None,
    preprocessing: Preprocessing,
) -> SearchResult:
    exported = export_front(study, config.export_dir, preprocessing=preprocessing)
    rows = front_rows(study)
    folder = Path(config.export_dir) / study.study_name
    plot = plot_front(study, Path(config.runs_dir) / study.study_name / "pareto.png")
    tracker.log_file(parent, plot)
    tracker.log_text(parent, front_table(rows), "pareto_front.md")
    tracker.log_text(parent, front_csv(rows), "pareto_front.csv")
    done, _ = trial_counts(study)
    tracker.log(parent, metrics={"n_trials_done": done, "front_size": len(rows)})
    tracker.close_orphans(study)
    end_parent(study, tracker, parent, config.n_trials, stopped_by)
    ending = ending_text(stopped_by or "the worker's exit", done, config.n_trials) if done < config.n_trials else None
    return SearchResult(study, rows, exported, parent, tracker.tracking_uri, folder, ending)


def search_result(config: StudyConfig) -> SearchResult:
    """What the runs of ``config``'s study left, read from its stores (nothing is run or written): the one
    summary ``blocknas workers`` prints after its workers, whose own summaries it silences."""
    study = load_study(config.name, config.storage_url)
    tracking_uri = resolve_tracking_uri(config.tracking_uri, config.runs_dir)
    rows = front_rows(study)
    folder = Path(config.export_dir) / study.study_name
    parent = str(study.user_attrs.get(PARENT_RUN_ATTR, ""))
    done, _ = trial_counts(study)
    ending = None
    if done < config.n_trials:
        tracker = StudyTracker(tracking_uri, config.name, runs_dir=config.runs_dir)
        tags = tracker.client.get_run(parent).data.tags if parent else {}
        ending = tags.get(STOPPED_TAG) or ending_text("the workers' exit", done, config.n_trials)
    exported = [path for path in (folder / f"{row.name}.yaml" for row in rows) if path.is_file()]
    return SearchResult(study, rows, exported, parent, tracking_uri, folder, ending)


def _study_params(config: StudyConfig, space: SearchSpace) -> dict[str, object]:
    flat: dict[str, object] = flatten(mask_config(config.to_dict()))
    flat["storage"] = mask_url(config.storage_url)
    flat["space.size"] = space.size()
    return flat
