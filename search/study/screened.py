"""``ScreenedObjective``: each trial trains the best of K candidates by a zero-cost proxy (experimental).

A screening pool lives inside one trial and counts once: no extra Optuna trial, no extra MLflow
run. The K candidates are drawn from a throwaway in-memory study holding copies of the study's
trials, with a sampler of the study's own kind seeded for this trial, so each candidate is what
the study's sampler could have proposed next. Cheapest first, as the plain path: the params and
MACs budgets, then (when a ``latency_ms`` budget is set) the latency; the proxy ranks the
feasible candidates. The trial then suggests exactly the kept candidate's values
(:class:`KeptParams` wraps the study's sampler) and goes through the plain :class:`Objective`
path: its params are the architecture it trains, which is what the sampler learns from, and its
one child run carries the screening as tags. The study's timeout is checked between candidates
(a pool cut short keeps the best so far); an interrupt during screening fails the trial as
interrupted and queues its retry, before any MLflow run exists.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import timm
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, Trial, TrialState

from blocknas.blocks import ArchConfig
from blocknas.search.latency import measure_latency
from blocknas.search.latency_gate import default_gate
from blocknas.search.pause_points import pause_point
from blocknas.search.tracking import WORKER_ATTR, mask_url, worker_id
from blocknas.search.tracking.faults import storage_fault
from blocknas.search.tracking.names import (
    SCREEN_KEPT_SCORE_TAG,
    SCREEN_POOL_TAG,
    SCREEN_PROXY_TAG,
    SCREEN_SCORES_TAG,
)
from blocknas.search.training import score_proxies, seed_everything

from .attrs import (
    ARCH_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED,
    SCREEN_KEPT_ATTR,
    SCREEN_POOL_ATTR,
    SCREEN_PROXY_ATTR,
    SCREEN_SCORES_ATTR,
)
from .objective import Objective
from .retry import retry_interrupted
from .screening import auto_proxy
from .start import make_sampler

__all__ = ["KeptParams", "ScreenedObjective"]

log = logging.getLogger(__name__)

_SHADOW_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class KeptParams(optuna.samplers.BaseSampler):
    """The study's sampler, except that a trial given a kept candidate suggests exactly its values.

    Optuna computes a trial's relative parameters lazily, at its first suggestion; a trial whose
    candidate is kept (:meth:`keep`, before it suggests anything) gets no relative parameters and
    each independent one from the candidate. The wrapped sampler still sees every trial's
    ``before_trial``/``after_trial``, and a genetic sampler (NSGA-II) still assigns the kept
    trial its generation, so it reads the trial as its own. Every other trial is the wrapped
    sampler's alone.
    """

    def __init__(self, base: optuna.samplers.BaseSampler) -> None:
        self.base = base
        self._kept: dict[int, dict[str, Any]] = {}

    def keep(self, number: int, params: dict[str, Any]) -> None:
        """Trial ``number`` suggests ``params`` (its kept candidate's values)."""
        self._kept[number] = dict(params)

    def forget(self, number: int) -> None:
        self._kept.pop(number, None)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if trial.number not in self._kept:
            return self.base.sample_relative(study, trial, search_space)
        if isinstance(self.base, optuna.samplers.BaseGASampler):
            self.base.get_trial_generation(study, trial)  # what its own sample_relative would have stored
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        kept = self._kept.get(trial.number, {})
        if param_name in kept:
            return kept[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self.forget(trial.number)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


@dataclass
class _Candidate:
    params: dict[str, Any]
    arch: ArchConfig
    score: float | None = None  # the proxy's (-inf when not finite); None: not scored
    over_budget: str | None = None
    error: str | None = None


@dataclass
class ScreenedObjective(Objective):
    """An :class:`Objective` that screens a pool of ``config.screen.pool`` candidates inside each trial."""

    started: float = field(default_factory=time.monotonic)  # the study's timeout counts from here

    def __call__(self, trial: Trial) -> float | tuple[float, ...]:
        screen = self.config.screen
        # a baseline, or the retry of a trial that had chosen already, is evaluated as it is
        if screen is None or ARCH_ATTR in trial.user_attrs or trial.params:
            return super().__call__(trial)
        trial.set_user_attr(WORKER_ATTR, worker_id())  # owned from the start: screening can take a while
        study = trial.study
        try:
            proxy = screen.proxy
            if proxy == "auto":
                proxy = auto_proxy(study.get_trials(deepcopy=False), self.config.proxy_names())
            candidates = self._screen(trial, proxy)
        except (KeyboardInterrupt, SystemExit):
            retry_interrupted(trial)  # before its fail reason: the retry inherits the trial's attributes
            trial.set_user_attr(FAIL_REASON_ATTR, INTERRUPTED)
            raise
        except Exception as exc:
            self._screening_failed(trial, exc)
            raise
        kept = _keep(candidates)
        trial.set_user_attr(SCREEN_PROXY_ATTR, proxy)
        trial.set_user_attr(SCREEN_POOL_ATTR, len(candidates))
        trial.set_user_attr(SCREEN_SCORES_ATTR, [_finite(c.score) for c in candidates])
        trial.set_user_attr(SCREEN_KEPT_ATTR, _finite(kept.score))
        sampler = _kept_params(study)
        sampler.keep(trial.number, kept.params)
        try:
            return super().__call__(trial)  # suggests the kept values: the trial's params are what it trains
        finally:
            sampler.forget(trial.number)

    def _screening_failed(self, trial: Trial, exc: Exception) -> None:
        """Say why the trial failed while screening; a storage fault also queues its retry (as the plain path)."""
        fault = storage_fault(exc)
        try:
            if fault is not None:
                retry_interrupted(trial)  # before its fail reason: the retry inherits the trial's attributes
            reason = f"StorageFault: {fault}" if fault is not None else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr(FAIL_REASON_ATTR, mask_url(reason))
        except Exception as error:  # the store that failed may take no write either
            log.warning("trial %d: %s; could not record it (%s)", trial.number, exc, error)

    def run_labels(self, trial: Trial, arch: ArchConfig) -> tuple[str, dict[str, str]]:
        """The plain labels, and the trial's screening (also on a retry, which inherits it)."""
        name, tags = super().run_labels(trial, arch)
        attrs = trial.user_attrs
        if SCREEN_PROXY_ATTR in attrs:
            tags[SCREEN_PROXY_TAG] = str(attrs[SCREEN_PROXY_ATTR])
            tags[SCREEN_POOL_TAG] = str(attrs[SCREEN_POOL_ATTR])
            tags[SCREEN_KEPT_SCORE_TAG] = str(attrs[SCREEN_KEPT_ATTR])
            tags[SCREEN_SCORES_TAG] = json.dumps([_short(s) for s in attrs[SCREEN_SCORES_ATTR]])
        return name, tags

    def _screen(self, trial: Trial, proxy: str) -> list[_Candidate]:
        """Draw and score the pool, one candidate at a time, until it is full or the study's time is up."""
        assert self.space is not None and self.config.screen is not None
        shadow = self._shadow(trial)
        candidates: list[_Candidate] = []
        for i in range(self.config.screen.pool):
            if i and self._out_of_time():
                log.info(
                    "trial %d: the study's timeout passed; screened %d of %d", trial.number, i, self.config.screen.pool
                )
                break
            asked = shadow.ask()
            arch = self.space.sample(asked, param_names=self.param_names)
            candidate = _Candidate(dict(asked.params), arch)
            self._score(candidate, proxy, self.seed_for(trial))
            candidates.append(candidate)
            pause_point("screen-candidate")  # a test's window: one candidate scored, the pool not done
        return candidates

    def _shadow(self, trial: Trial) -> optuna.Study:
        """A throwaway in-memory study with the study's other trials and a sampler of its kind, seeded for ``trial``."""
        study = trial.study
        seed = (self.seed_for(trial) + trial.number) % 2**32
        shadow = optuna.create_study(directions=study.directions, sampler=make_sampler(self.config, seed))
        others = study.get_trials(deepcopy=False, states=_SHADOW_STATES)
        shadow.add_trials(t for t in others if t.number != trial.number)
        return shadow

    def _out_of_time(self) -> bool:
        timeout = self.config.timeout_s
        return timeout is not None and time.monotonic() - self.started >= timeout

    def _score(self, candidate: _Candidate, proxy: str, seed: int) -> None:
        """Budgets first (params, MACs, then the latency if budgeted), then the proxy; a failure is recorded."""
        arch = candidate.arch
        try:
            cost = arch.cost()
            candidate.over_budget = self._over_budget({"params": cost.params, "macs": cost.macs})
            if candidate.over_budget:
                return
            seed_everything(seed)
            model = timm.create_model("blocknet", arch=arch)
            if "latency_ms" in self.config.constraints.active():
                candidate.over_budget = self._over_budget({"latency_ms": self._latency_ms(arch, model)})
                if candidate.over_budget:
                    return
            value = score_proxies(model, self.proxy_batch, [proxy], seed=seed)[proxy].value
            candidate.score = value if math.isfinite(value) else -math.inf
        except Exception as exc:
            candidate.error = f"{type(exc).__name__}: {exc}"
            log.warning("screening candidate %s: %s", arch.short_hash(), candidate.error)

    def _latency_ms(self, arch: ArchConfig, model: Any) -> float:
        """The table's prediction in predicted mode, else a measurement (sibling trainers pause meanwhile)."""
        if self.predictor is not None:
            return self.predictor.corrected(self.predictor.raw_sum(arch))
        gate = None if self.config.latency.agent is not None else default_gate()
        if gate is None:
            return measure_latency(model, (arch.in_chans, *arch.input_size), self.config.latency).p50_ms
        with gate.measuring():
            return measure_latency(model, (arch.in_chans, *arch.input_size), self.config.latency).p50_ms

    def _over_budget(self, values: dict[str, float]) -> str | None:
        """Which of ``values`` exceed their budget, as the plain path words it; None when none does."""
        violated = [
            f"{key}={values[key]:.4g} > {limit:.4g}"
            for key, limit in self.config.constraints.active().items()
            if key in values and values[key] > limit
        ]
        return ", ".join(violated) or None


def _keep(candidates: list[_Candidate]) -> _Candidate:
    """The best scored candidate (ties: the earliest drawn); else one that failed, so the trial records the
    failure; else the first (over budget: the trial is rejected on its budget, as any such trial)."""
    scored = [c for c in candidates if c.score is not None]
    if scored:
        return max(scored, key=lambda c: c.score if c.score is not None else -math.inf)
    failed = [c for c in candidates if c.error is not None]
    return failed[0] if failed else candidates[0]


def _kept_params(study: optuna.Study) -> KeptParams:
    """The study's sampler, wrapped once in :class:`KeptParams`."""
    if not isinstance(study.sampler, KeptParams):
        study.sampler = KeptParams(study.sampler)
    return study.sampler


def _finite(score: float | None) -> float | None:
    return score if score is not None and math.isfinite(score) else None


def _short(score: float | None) -> float | None:
    return None if score is None else float(f"{score:.6g}")
