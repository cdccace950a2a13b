"""The Optuna objective: architecture → cost checks → brief training → (accuracy, latency).

Cheap first: parameters and MACs are analytic, latency is measured (or predicted) on the
untrained network before any training, and a candidate over a budget is recorded as
infeasible with ``trial.set_constraint`` and never trained. In predicted mode a candidate
predicted over the latency budget is not even built; every other one is measured, and that
measurement calibrates the predictions of later candidates.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import traceback
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import timm
import torch
from optuna.trial import FrozenTrial, Trial
from torch import nn

from blocknas.blocks import ArchConfig, Cost
from blocknas.blocks.schema import to_plain
from blocknas.search.data import DataSplit
from blocknas.search.latency import AgentClient, AgentError, AgentLost, LatencyPredictor, measure_latency
from blocknas.search.latency_gate import default_gate
from blocknas.search.tracking import WORKER_ATTR, StudyTracker, mask_url, worker_id
from blocknas.search.tracking.faults import StorageFault, storage_fault
from blocknas.search.tracking.names import (
    ACCURACY_METRIC,
    ARCH_HASH_TAG,
    BASELINE_TAG,
    BLOCK_TAG_PREFIX,
    BLOCKS_TAG,
    ERROR_TAG,
    FINGERPRINT_ID_TAG,
    FINGERPRINT_TAG_PREFIX,
    LATENCY_METRIC,
    LATENCY_PREDICTED_METRIC,
    MACS_METRIC,
    OBJECTIVE_METRICS,
    OVER_BUDGET_TAG,
    PARAMS_METRIC,
    PRUNED_AT_EPOCH_TAG,
    PRUNED_BY_TAG,
    PRUNED_RUNG_TAG,
    STATE_COMPLETE,
    STATE_DIVERGED,
    STATE_FAILED,
    STATE_KILLED,
    STATE_OVER_BUDGET,
    STATE_PRUNED,
    STATE_TAG,
    STUDY_TAG,
    TRAIN_SECONDS_METRIC,
)
from blocknas.search.tracking.runs import TrackingOutage
from blocknas.search.training import (
    DivergedError,
    EpochStats,
    TrainResult,
    proxy_batch,
    seed_everything,
    train_briefly,
)
from blocknas.search.training.proxies import ProxyScore
from blocknas.spaces import SearchSpace

from .attrs import (
    ARCH_ATTR,
    BASELINE_ATTR,
    FAIL_REASON_ATTR,
    FINGERPRINT_ATTR,
    INTERRUPTED,
    LATENCY_ATTR,
    LATENCY_CALIBRATED_ATTR,
    LATENCY_MEASURED_ATTR,
    LATENCY_PREDICTED_ATTR,
    OVER_BUDGET_ATTR,
    TRAIN_SECONDS_ATTR,
)
from .config import StudyConfig
from .definition import definition_settings
from .duplicates import find_original, take_recorded, training_key
from .pruning import PRUNED_BY, ParetoAsha, TrialRungs
from .retry import retry_interrupted
from .screening import record_proxies

__all__ = ["Objective", "TrialContext", "latency_fingerprints", "trial_tags"]

log = logging.getLogger(__name__)


def latency_fingerprints(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """How many of ``trials`` had their latency measured under each device fingerprint id."""
    return dict(Counter(t.user_attrs[FINGERPRINT_ATTR] for t in trials if FINGERPRINT_ATTR in t.user_attrs))


def trial_tags(arch: ArchConfig) -> dict[str, str]:
    """Tags describing an architecture: its hash and the block of each stage."""
    tags = {ARCH_HASH_TAG: arch.short_hash(), BLOCKS_TAG: ",".join(s.block for s in arch.stages)}
    tags.update({f"{BLOCK_TAG_PREFIX}s{i}": s.block for i, s in enumerate(arch.stages)})
    return tags


@dataclass
class TrialContext:
    """One trial on its way through :class:`Objective`'s steps; each step fills in what later steps read.

    The fields without a default are set by the step that makes them: reading one before that
    step ran is an ``AttributeError``, never a silent default.
    """

    trial: Trial
    arch: ArchConfig
    run_id: str = ""
    status: str = "FAILED"  # the MLflow run's end status, as far as the trial got
    predicted: float | None = None  # the table's latency (predicted mode only)
    seed: int = field(init=False, repr=False)
    cost: Cost = field(init=False, repr=False)
    model: nn.Module = field(init=False, repr=False)
    latency_ms: float = field(init=False, repr=False)  # the latency objective
    result: TrainResult = field(init=False, repr=False)


@dataclass
class Objective:
    """Callable for ``study.optimize``; returns (accuracy, latency_ms) or accuracy alone.

    A subclass changes where a trial's network and seed come from and how its run is labelled
    (:meth:`architecture`, :meth:`seed_for`, :meth:`run_labels`); the steps are the same for all.
    """

    config: StudyConfig
    space: SearchSpace | None  # None: a subclass overrides architecture()
    data: DataSplit
    tracker: StudyTracker
    parent_run_id: str
    predictor: LatencyPredictor | None = None
    progress: bool = False
    param_names: Mapping[str, str] = field(default_factory=dict)  # knobs renamed after the space grew

    @property
    def multi(self) -> bool:
        return self.config.objective == "multi"

    def architecture(self, trial: Trial) -> ArchConfig:
        """The baseline enqueued for this trial, or a sample from the space."""
        if BASELINE_ATTR in trial.user_attrs:
            return ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
        if self.space is None:
            raise TypeError("an Objective without a space must override architecture()")
        return self.space.sample(trial, param_names=self.param_names)

    def seed_for(self, trial: Trial) -> int:
        """Seed of model init and data order; one seed for all trials so they compare fairly."""
        return self.config.seed

    def run_labels(self, trial: Trial, arch: ArchConfig) -> tuple[str, dict[str, str]]:
        """Name and tags of the trial's MLflow child run; subclasses add their own tags."""
        tags = {**trial_tags(arch), STUDY_TAG: self.config.name}
        if BASELINE_ATTR in trial.user_attrs:
            tags[BASELINE_TAG] = str(trial.user_attrs[BASELINE_ATTR])
        return f"trial-{trial.number:04d}-{arch.short_hash()}", tags

    def __call__(self, trial: Trial) -> float | tuple[float, ...]:
        """One trial: its architecture, its MLflow child run, the steps inside the run, the run closed."""
        ctx = self._draw(trial)
        self._open_run(ctx)
        try:
            values = self._evaluate(ctx)
            ctx.status = "FINISHED"
            return values
        except BaseException as exc:
            self._record_end(ctx, exc)
            raise
        finally:
            self.tracker.end_run(ctx.run_id, ctx.status)

    def _evaluate(self, ctx: TrialContext) -> float | tuple[float, ...]:
        """The steps, cheapest first; a step that rejects the trial raises (pruned, over budget, failed)."""
        self._log_cost(ctx)
        ctx.seed = self.seed_for(ctx.trial)
        recorded = self._recorded_values(ctx)
        if recorded is not None:
            return recorded
        self._check_cost_budget(ctx)
        self._predict_latency(ctx)
        self._build_model(ctx)
        self._measure_latency(ctx)
        self._score_proxies(ctx)
        self._check_latency_budget(ctx)
        self._train(ctx)
        return self._record_result(ctx)

    # -- the steps, in order ------------------------------------------------------------

    def _draw(self, trial: Trial) -> TrialContext:
        """Own the trial (its worker) and draw its architecture, stored on the trial."""
        trial.set_user_attr(WORKER_ATTR, worker_id())
        arch = self.architecture(trial)
        trial.set_user_attr(ARCH_ATTR, arch.to_dict())
        return TrialContext(trial, arch)

    def _open_run(self, ctx: TrialContext) -> None:
        """Open the trial's MLflow child run. An outage makes no run: the trial is retried, not counted."""
        run_name, tags = self.run_labels(ctx.trial, ctx.arch)
        try:
            ctx.run_id = self.tracker.start_child(self.parent_run_id, ctx.trial, run_name, tags)
        except TrackingOutage as outage:
            retry_interrupted(ctx.trial)  # before its fail reason: the retry inherits the trial's attributes
            ctx.trial.set_user_attr(FAIL_REASON_ATTR, mask_url(f"TrackingOutage: {outage}"))
            raise

    def _log_cost(self, ctx: TrialContext) -> None:
        """Log the run's parameters, the analytic cost (params, MACs) and the architecture YAML."""
        ctx.cost = ctx.arch.cost()
        metrics = {PARAMS_METRIC: ctx.cost.params, MACS_METRIC: ctx.cost.macs}
        self.tracker.log(ctx.run_id, params=self._params(ctx.arch), metrics=metrics)
        self.tracker.log_text(ctx.run_id, ctx.arch.to_yaml(), "arch.yaml")

    def _recorded_values(self, ctx: TrialContext) -> float | tuple[float, ...] | None:
        """A duplicate's values: the result of the trial evaluated first under the same key
        (see :mod:`.duplicates`); None if this trial is to train."""
        key = training_key(ctx.arch, ctx.seed, definition_settings(self.config))
        original = find_original(ctx.trial, key)
        if original is None:
            return None
        names = list(OBJECTIVE_METRICS if self.multi else OBJECTIVE_METRICS[:1])
        values = take_recorded(ctx.trial, original, self.tracker, ctx.run_id, names)
        return values if self.multi else values[0]

    def _check_cost_budget(self, ctx: TrialContext) -> None:
        """Reject the trial if its parameters or MACs are over budget, before anything is built."""
        self._reject_over_budget(ctx.trial, ctx.run_id, {"params": ctx.cost.params, "macs": ctx.cost.macs})

    def _predict_latency(self, ctx: TrialContext) -> None:
        """Predicted mode: the table's latency (logged with its raw sum and whether it was calibrated),
        and its budget, before anything is built or exported."""
        predictor = self.predictor
        if predictor is None:
            return
        raw = predictor.raw_sum(ctx.arch)  # measures and stores any missing table entries
        predicted = predictor.corrected(raw)
        calibrated = predictor.calibrated
        self.tracker.log(
            ctx.run_id,
            metrics={LATENCY_PREDICTED_METRIC: predicted, "latency_predicted_raw_ms": raw},
            tags={
                "latency.calibrated": str(calibrated).lower(),
                "latency.calibration_points": predictor.n_calibration_points,
            },
        )
        ctx.trial.set_user_attr(LATENCY_ATTR, predicted)
        ctx.trial.set_user_attr(LATENCY_PREDICTED_ATTR, predicted)
        ctx.trial.set_user_attr(LATENCY_CALIBRATED_ATTR, calibrated)
        ctx.predicted = predicted
        self._reject_over_budget(ctx.trial, ctx.run_id, {"latency_ms": predicted})

    def _build_model(self, ctx: TrialContext) -> None:
        """The untrained network, its initialisation seeded with the trial's seed."""
        seed_everything(ctx.seed)
        ctx.model = timm.create_model("blocknet", arch=ctx.arch)

    def _measure_latency(self, ctx: TrialContext) -> None:
        """The trial's latency objective, recorded: measured (here or on the latency agent), or predicted.

        With a device's table and no agent, the prediction is the latency: measuring here
        would time another device, so nothing is measured.
        """
        if self.predictor is not None and self.predictor.offline and ctx.predicted is not None:
            ctx.latency_ms = self._table_latency(ctx, self.predictor, ctx.predicted)
        else:
            ctx.latency_ms = self._measured_latency(ctx)

    def _score_proxies(self, ctx: TrialContext) -> None:
        """The study's zero-cost proxies of the untrained network (recorded; they decide nothing here)."""
        self.record_proxies(ctx.trial, ctx.run_id, ctx.model, self.config.proxy_names(), ctx.seed)

    def _check_latency_budget(self, ctx: TrialContext) -> None:
        """Reject the trial if its measured latency is over budget (a predicted one was checked before building)."""
        if ctx.predicted is None:
            self._reject_over_budget(ctx.trial, ctx.run_id, {"latency_ms": ctx.latency_ms})

    def _train(self, ctx: TrialContext) -> None:
        """Brief training, each epoch logged and offered to the pruner (a diverged run fails, tagged ``diverged``)."""
        on_epoch = functools.partial(self._after_epoch, ctx, self._pareto_rungs(ctx.trial, ctx.latency_ms))
        ctx.result = train_briefly(
            ctx.model, self.data, self.config.train, seed=ctx.seed, on_epoch=on_epoch, progress=self.progress
        )

    def _record_result(self, ctx: TrialContext) -> float | tuple[float, ...]:
        """Log the trained network's score, raw accuracy, loss and training time; the trial's objective values."""
        result = ctx.result
        score = result.ema_val_accuracy if self.config.score == "ema_accuracy" else result.val_accuracy
        assert score is not None  # StudyConfig requires train.ema_decay for ema_accuracy
        metrics = {
            ACCURACY_METRIC: score,  # the objective, as the study's ``score:`` defines it
            "raw_accuracy": result.val_accuracy,  # the trained weights' top-1, whatever the score
            "val_loss": result.val_loss,
            TRAIN_SECONDS_METRIC: result.train_seconds,
        }
        if result.ema_val_accuracy is not None:
            metrics["ema_accuracy"] = result.ema_val_accuracy
        self.tracker.log(ctx.run_id, metrics=metrics, tags={STATE_TAG: STATE_COMPLETE})
        ctx.trial.set_user_attr(TRAIN_SECONDS_ATTR, result.train_seconds)
        return (score, ctx.latency_ms) if self.multi else score

    def _record_end(self, ctx: TrialContext, exc: BaseException) -> None:
        """Record why the trial stopped early and the status its run ends with."""
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        if isinstance(exc, optuna.TrialPruned):
            self._pruned(ctx)
        elif isinstance(exc, AgentError):
            self._agent_failed(ctx, exc)
        elif (fault := None if interrupted else storage_fault(exc)) is not None:
            ctx.status = "KILLED"
            self._cut_short(ctx, fault)
        else:
            self._failed(ctx, exc, interrupted=interrupted)

    # -- how a trial ends early -----------------------------------------------------------

    def _pruned(self, ctx: TrialContext) -> None:
        """Pruned (over a budget, by the pruner, or as its duplicate's original was): a finished run, tagged so."""
        state = STATE_OVER_BUDGET if OVER_BUDGET_ATTR in ctx.trial.user_attrs else STATE_PRUNED
        self.tracker.log(ctx.run_id, tags={STATE_TAG: state})
        ctx.status = "FINISHED"

    def _failed(self, ctx: TrialContext, exc: BaseException, *, interrupted: bool) -> None:
        """An error fails the trial (traceback on its run); an interrupt kills it and queues its retry."""
        reason = INTERRUPTED if interrupted else mask_url(f"{type(exc).__name__}: {exc}")
        if interrupted:
            retry_interrupted(ctx.trial)  # before its fail reason: the retry inherits the trial's attributes
        ctx.trial.set_user_attr(FAIL_REASON_ATTR, reason)
        state = STATE_KILLED if interrupted else STATE_DIVERGED if isinstance(exc, DivergedError) else STATE_FAILED
        self.tracker.log(ctx.run_id, tags={STATE_TAG: state, ERROR_TAG: reason})
        if not interrupted:
            self.tracker.log_text(ctx.run_id, traceback.format_exc(), "error.txt")
        ctx.status = "KILLED" if interrupted else "FAILED"

    def _agent_failed(self, ctx: TrialContext, exc: AgentError) -> None:
        """The agent did not measure this trial: fail it, queue its retry; stop the worker if the agent is gone.

        The network is not at fault, so it is retried (as an interrupted trial is). A timeout
        can be passing (the device was busy): if the agent answers ``/health`` now, the search
        goes on and the retry runs next. If not, every later trial would fail the same way, so
        :class:`AgentLost` stops this worker (exit 2); rerunning the command resumes the study.
        """
        trial = ctx.trial
        retry_interrupted(trial)  # before its fail reason: the retry inherits the trial's attributes
        reason = mask_url(f"AgentError: {exc}")
        trial.set_user_attr(FAIL_REASON_ATTR, reason)
        self.tracker.log(ctx.run_id, tags={STATE_TAG: STATE_FAILED, ERROR_TAG: reason})
        try:
            AgentClient.for_target(self.config.latency).health()
        except AgentError:
            raise AgentLost(
                f"{exc}. Trial {trial.number} failed and is queued for retry; the agent still does not answer, so "
                "this worker stops: rerun the same command once it answers again"
            ) from exc
        log.warning("trial %d: %s; queued for retry (the agent answers again)", trial.number, exc)

    def _cut_short(self, ctx: TrialContext, fault: StorageFault) -> None:
        """A storage fault cut the trial short: queue its retry and say why, as far as the stores still take writes.

        Where even the retry cannot be written, the trial stays RUNNING and the next worker's
        recovery fails and retries it (its worker, this one, will have exited).
        """
        reason = mask_url(f"StorageFault: {fault}")
        try:
            retry_interrupted(ctx.trial)  # before its fail reason: the retry inherits the trial's attributes
            ctx.trial.set_user_attr(FAIL_REASON_ATTR, reason)
            self.tracker.log(ctx.run_id, tags={STATE_TAG: STATE_KILLED, ERROR_TAG: reason})
        except Exception as error:
            log.warning("trial %d: %s; could not record it (%s)", ctx.trial.number, fault, error)

    # -- what the steps use -----------------------------------------------------------------

    def _table_latency(self, ctx: TrialContext, table: LatencyPredictor, predicted: float) -> float:
        """The table's prediction as the latency, recorded with the fingerprint of the table's device."""
        tags = _fingerprint_tags(table.fingerprint, table.fingerprint_id)
        self.tracker.log(ctx.run_id, metrics={LATENCY_METRIC: predicted}, tags=tags)
        ctx.trial.set_user_attr(FINGERPRINT_ATTR, table.fingerprint_id)
        return predicted

    def _measured_latency(self, ctx: TrialContext) -> float:
        """Measure the network here or on the agent; it calibrates the predictions; the prediction,
        if any, stays the latency objective."""
        arch, trial = ctx.arch, ctx.trial
        remote = self.config.latency.agent is not None  # measured on another device: nobody here needs to pause
        gate = None if remote else default_gate()  # sibling trainers on this machine pause while it measures
        with gate.measuring() if gate is not None else contextlib.nullcontext():
            measured = measure_latency(ctx.model, (arch.in_chans, *arch.input_size), self.config.latency)
        if self.predictor is not None:
            self.predictor.add_calibration_point(arch, measured.p50_ms)
        latency_ms = measured.p50_ms if ctx.predicted is None else ctx.predicted
        self.tracker.log(
            ctx.run_id,
            metrics={**measured.as_metrics(), LATENCY_METRIC: latency_ms},
            tags=_fingerprint_tags(measured.fingerprint, measured.fingerprint_id),
        )
        trial.set_user_attr(LATENCY_ATTR, latency_ms)
        trial.set_user_attr(LATENCY_MEASURED_ATTR, measured.p50_ms)
        trial.set_user_attr(FINGERPRINT_ATTR, measured.fingerprint_id)
        return latency_ms

    def _after_epoch(self, ctx: TrialContext, rungs: TrialRungs | None, stats: EpochStats) -> None:
        """Log the epoch's curve point; pareto_asha's rungs, or Optuna's pruner (one objective), may stop the trial."""
        self.tracker.log(ctx.run_id, metrics=_epoch_metrics(stats), step=stats.epoch)
        if rungs is not None:
            self._check_rungs(rungs, ctx.run_id, stats)
        elif not self.multi:
            ctx.trial.report(stats.val_accuracy, stats.epoch)
            if ctx.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {stats.epoch}")

    @functools.cached_property
    def proxy_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one seeded training batch every trial's zero-cost proxies see."""
        return proxy_batch(self.data, seed=self.config.seed)

    def record_proxies(
        self, trial: Trial, run_id: str, model: nn.Module, names: Sequence[str], seed: int
    ) -> dict[str, ProxyScore]:
        """Zero-cost proxies of the untrained ``model`` (left untouched), before the latency verdict and training."""
        if not names:
            return {}
        return record_proxies(trial, self.tracker, run_id, model, self.proxy_batch, names, seed=seed)

    def _pareto_rungs(self, trial: Trial, latency_ms: float) -> TrialRungs | None:
        """``pruner: pareto_asha``'s follower of this trial's rungs; None under any other pruner."""
        if self.config.pruner != "pareto_asha" or not self.multi:
            return None
        train, pruning = self.config.train, self.config.pruning
        tie = self.config.latency.rel_precision if pruning.latency_tie_rel is None else pruning.latency_tie_rel
        return ParetoAsha(pruning, train.epochs, train.time_budget_s, tie).start(trial, latency_ms)

    def _check_rungs(self, rungs: TrialRungs, run_id: str, stats: EpochStats) -> None:
        """Record and decide the rungs this epoch reached (MLflow ``rung_accuracy``, step = rung); stop if pruned."""
        n_before = len(rungs.decisions)
        stop = rungs.after_epoch(stats.epoch + 1, stats.seconds, stats.val_accuracy)
        for decision in rungs.decisions[n_before:]:
            self.tracker.log(run_id, metrics={"rung_accuracy": stats.val_accuracy}, step=decision.rung)
        if stop is not None:
            tags = {
                PRUNED_BY_TAG: PRUNED_BY,
                PRUNED_AT_EPOCH_TAG: stats.epoch + 1,
                PRUNED_RUNG_TAG: rungs.decisions[-1].rung,
            }
            self.tracker.log(run_id, tags=tags)
            raise stop

    def _reject_over_budget(self, trial: Trial, run_id: str, values: dict[str, float]) -> None:
        """Record constraints on ``values`` with ``trial.set_constraint``; prune the trial if any is violated.

        An over-budget candidate ends as PRUNED (never trained, no made-up accuracy), tagged
        ``over_budget`` in MLflow, with its constraint values recorded for the samplers.
        """
        violated = []
        for key, limit in self.config.constraints.active().items():
            if key in values:
                excess = values[key] - limit
                trial.set_constraint(key, excess)
                if excess > 0:
                    violated.append(f"{key}={values[key]:.4g} > {limit:.4g}")
        if violated:
            reason = ", ".join(violated)
            trial.set_user_attr(OVER_BUDGET_ATTR, reason)
            self.tracker.log(run_id, tags={OVER_BUDGET_TAG: reason})
            raise optuna.TrialPruned(f"over budget: {reason}")

    def _params(self, arch: ArchConfig) -> dict[str, Any]:
        params: dict[str, Any] = {f"arch.{k}": v for k, v in arch.flat_params().items()}
        params.update({f"train.{k}": v for k, v in _plain(self.config.train).items()})
        params.update({f"latency.{k}": v for k, v in _plain(self.config.latency).items()})
        params["data.name"] = self.config.data.name
        return params


def _plain(obj: Any) -> dict[str, Any]:
    return dict(to_plain(obj))


def _epoch_metrics(stats: EpochStats) -> dict[str, float]:
    return {
        "epoch_train_loss": stats.train_loss,
        "epoch_train_accuracy": stats.train_accuracy,
        "epoch_val_loss": stats.val_loss,
        "epoch_val_accuracy": stats.val_accuracy,
        "epoch_lr": stats.lr,
    }


def _fingerprint_tags(fingerprint: Mapping[str, str], fingerprint_id: str) -> dict[str, str]:
    tags = {f"{FINGERPRINT_TAG_PREFIX}{k}": v for k, v in fingerprint.items()}
    tags[FINGERPRINT_ID_TAG] = fingerprint_id
    return tags
