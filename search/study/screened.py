"""``ScreenedObjective``: train only the best of K proposed candidates by a zero-cost proxy.

Each call gets a pool: the trial Optuna runs (the host) and K−1 more from ``study.ask()``,
each a real trial with its own parameters and MLflow child run. Cheapest first: params and
MACs budgets, then (when a ``latency_ms`` budget is set) the measured latency; the proxy
ranks the feasible candidates and the best goes through the plain :class:`Objective` path
(cost, latency, every proxy, brief training). The others end as PRUNED trials with the
``screened_out_by`` attribute and ``blocknas.state=screened_out`` in MLflow, never trained.

The sampler learns from them as from any PRUNED trial: Optuna's TPE puts PRUNED trials
without intermediate values after the complete ones when splitting good from bad (so in
practice into its "bad" density), and over-budget ones by their constraint violation;
NSGA-II reads only COMPLETE trials and learns nothing from them.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import optuna
import timm
from optuna.trial import Trial, TrialState

from blocknas.blocks import ArchConfig
from blocknas.search.latency import measure_latency
from blocknas.search.tracking import WORKER_ATTR, worker_id
from blocknas.search.tracking.names import (
    ERROR_TAG,
    LATENCY_METRIC,
    MACS_METRIC,
    PARAMS_METRIC,
    SCREEN_PROXY_TAG,
    SCREENED_OUT_BY_TAG,
    STATE_TAG,
)
from blocknas.search.training import seed_everything

from .attrs import (
    ARCH_ATTR,
    OVER_BUDGET_ATTR,
    SCREEN_COUNTED_ATTR,
    SCREEN_KEPT_ATTR,
    SCREEN_POOL_ATTR,
    SCREENED_OUT_ATTR,
    TRAINING_KEY_ATTR,
)
from .objective import Objective
from .screening import auto_proxy

__all__ = ["SCREENED_OUT", "ScreenedObjective"]

SCREENED_OUT = "screened_out"  # the MLflow blocknas.state of a candidate the proxy did not keep


@dataclass
class _Candidate:
    trial: Trial
    arch: ArchConfig
    run_id: str
    score: float = -math.inf


@dataclass
class ScreenedObjective(Objective):
    """An :class:`Objective` that screens a pool of ``config.screen.pool`` candidates per trial."""

    def __call__(self, trial: Trial) -> float | tuple[float, ...]:
        screen = self.config.screen
        if screen is None or ARCH_ATTR in trial.user_attrs:  # a baseline is evaluated as it is
            return super().__call__(trial)
        study = trial.study
        proxy = screen.proxy
        if proxy == "auto":
            proxy = auto_proxy(study.get_trials(deepcopy=False), self.config.proxy_names())
        pool = [trial] + [study.ask() for _ in range(screen.pool - 1)]
        asked = pool[1:]
        for other in asked:  # owned at once, so no other worker takes one for an orphan
            other.set_user_attr(WORKER_ATTR, worker_id())
        try:
            kept, rejected = self._screen(pool, proxy)
        except BaseException:
            for other in asked:
                study.tell(other, state=TrialState.FAIL)
            raise
        for other, state in rejected.items():
            if other is not trial:
                study.tell(other, state=state)
        if kept is None:  # nothing feasible: the host stands for the pool
            trial.set_user_attr(SCREEN_COUNTED_ATTR, True)
            raise optuna.TrialPruned(f"no feasible candidate in the pool: {trial.user_attrs.get(OVER_BUDGET_ATTR)}")
        kept.set_user_attr(SCREEN_COUNTED_ATTR, True)
        if kept is not trial:  # the host stays RUNNING meanwhile: a key of its own, so no duplicate check waits on it
            trial.set_user_attr(TRAINING_KEY_ATTR, {"key": f"screening-host:{trial.number}", "ticket": 0})
        with warnings.catch_warnings():  # the plain path sets the budgets' constraint values again, unchanged
            warnings.filterwarnings("ignore", "The constraint value is ignored", UserWarning)
            if kept is trial:
                return super().__call__(trial)
            self._evaluate_asked(kept)
        raise optuna.TrialPruned(f"screened out by {proxy}: trial {kept.number} kept")

    def _evaluate_asked(self, kept: Trial) -> None:
        """The plain path for a pool member that is not the host; told to the study like Optuna would."""
        study = kept.study
        try:
            values = super().__call__(kept)
        except optuna.TrialPruned:
            study.tell(kept, state=TrialState.PRUNED)
            return
        except Exception:
            study.tell(kept, state=TrialState.FAIL)
            return
        except BaseException:
            study.tell(kept, state=TrialState.FAIL)
            raise
        study.tell(kept, values)

    def _screen(self, pool: list[Trial], proxy: str) -> tuple[Trial | None, dict[Trial, TrialState]]:
        """Cheap checks and the proxy for each candidate; returns the kept one and the others' final states."""
        feasible: list[_Candidate] = []
        rejected: dict[Trial, TrialState] = {}
        for trial in pool:
            trial.set_user_attr(WORKER_ATTR, worker_id())
            trial.set_user_attr(SCREEN_POOL_ATTR, pool[0].number)
            arch = self.architecture(trial)
            candidate = _Candidate(trial, arch, "")
            try:
                candidate.score = self._cheap_stage(candidate, proxy)
            except optuna.TrialPruned:
                self._close(candidate, "over_budget")
                rejected[trial] = TrialState.PRUNED
                continue
            except Exception as exc:
                self.tracker.log(candidate.run_id, tags={STATE_TAG: "failed", ERROR_TAG: str(exc)})
                self.tracker.end_run(candidate.run_id, "FAILED")
                rejected[trial] = TrialState.FAIL
                continue
            feasible.append(candidate)
        if not feasible:
            return None, rejected
        best = max(feasible, key=lambda c: c.score)  # ties: the earliest, the host first
        for candidate in feasible:
            if candidate is not best:
                candidate.trial.set_user_attr(SCREENED_OUT_ATTR, proxy)
                candidate.trial.set_user_attr(SCREEN_KEPT_ATTR, best.trial.number)
                self._close(candidate, SCREENED_OUT, {SCREENED_OUT_BY_TAG: proxy})
                rejected[candidate.trial] = TrialState.PRUNED
            else:  # the plain path opens its run again and logs all of it: one run per trial in MLflow
                self.tracker.client.delete_run(candidate.run_id)
        return best.trial, rejected

    def _cheap_stage(self, candidate: _Candidate, proxy: str) -> float:
        """Budgets first (params, MACs, then the measured latency if budgeted), then the screening proxy."""
        trial, arch = candidate.trial, candidate.arch
        trial.set_user_attr(ARCH_ATTR, arch.to_dict())
        name, tags = self.run_labels(trial, arch)
        candidate.run_id = self.tracker.start_child(self.parent_run_id, trial, f"{name}-screen", tags)
        cost = arch.cost()
        self.tracker.log(candidate.run_id, metrics={PARAMS_METRIC: cost.params, MACS_METRIC: cost.macs})
        self._reject_over_budget(trial, candidate.run_id, {"params": cost.params, "macs": cost.macs})
        seed = self.seed_for(trial)
        seed_everything(seed)
        model = timm.create_model("blocknet", arch=arch)
        if "latency_ms" in self.config.constraints.active():
            measured = measure_latency(model, (arch.in_chans, *arch.input_size), self.config.latency)
            self.tracker.log(candidate.run_id, metrics={LATENCY_METRIC: measured.p50_ms})
            self._reject_over_budget(trial, candidate.run_id, {"latency_ms": measured.p50_ms})
        scores = self.record_proxies(trial, candidate.run_id, model, [proxy], seed)
        self.tracker.log(candidate.run_id, tags={SCREEN_PROXY_TAG: proxy})
        return scores[proxy].value if math.isfinite(scores[proxy].value) else -math.inf

    def _close(self, candidate: _Candidate, state: str, tags: dict[str, str] | None = None) -> None:
        self.tracker.log(candidate.run_id, tags={STATE_TAG: state, **(tags or {})})
        self.tracker.end_run(candidate.run_id, "FINISHED")
