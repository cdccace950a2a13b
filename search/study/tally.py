"""The one tally of a study's trials against its ``n_trials``.

The study runner (when to stop asking for trials, which trial is surplus), the ablation runner
(which cells are finished), the report (trials by outcome) and the benchmarks all count with
these functions, so "done" means the same everywhere. ``n_trials`` is a study-wide total:
every worker and every resume add up to it, never past it.

The rule, one trial at a time:

- **COMPLETE and PRUNED count.** PRUNED covers a trial stopped by the pruner and a candidate
  rejected over a budget before it was trained.
- **A duplicate counts.** A trial that copied the recorded result of an architecture the study
  already trained (``duplicate_of``) ends COMPLETE or PRUNED like the trial it copied: it took a
  slot, and the sampler was told the value.
- **A screened trial counts once.** Its pool of candidates is drawn, scored and narrowed inside
  that one trial (:mod:`.screened`); the candidates are not trials.
- **FAIL counts** (an error is an outcome; the trial is not tried again), **except**:

  - a *retried* trial: Optuna's retry (``retry_history`` on a later trial names it) stands in
    for it. A trial is retried when its worker died (the heartbeat stopped) and when it was
    interrupted (Ctrl-C, SIGTERM, a tracking or storage outage, a lost latency agent): the
    retry is queued before the trial is failed (:func:`.retry.retry_interrupted`), so an
    interrupted trial never counts; its retry counts once it finishes;
  - a *surplus* trial (``blocknas.surplus``): numbered past ``n_trials`` because two workers
    started the last trial at the same moment, and discarded before it ran.

- **RUNNING trials are owed, not done:** a worker stops asking for trials once done + running
  reaches ``n_trials``, leaving the rest to the workers that hold them. WAITING trials (queued
  baselines, retries) are neither: the next worker runs them as the next trials.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocknas.search.tracking.attrs import RETRY_HISTORY_ATTR

from .attrs import SURPLUS_ATTR

__all__ = [
    "COUNTED_STATES",
    "counts_toward_total",
    "outcome",
    "past_total",
    "retried_trials",
    "tally",
    "trial_counts",
]

COUNTED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
"""The states of a trial that counts, unless it was retried or is surplus (see the module's rule)."""


def retried_trials(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the trials that Optuna re-enqueued as a retry: their retries count instead."""
    return {n for t in trials for n in t.system_attrs.get(RETRY_HISTORY_ATTR, ())}


def outcome(trial: FrozenTrial, retried: set[int]) -> str:
    """Where ``trial`` stands in the tally: ``counted``, ``retried``, ``surplus``, ``running`` or ``waiting``.

    Args:
        trial: One trial of the study.
        retried: :func:`retried_trials` of the whole study.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "counted"
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return trial.state.name.lower()
    if trial.number in retried:
        return "retried"
    if SURPLUS_ATTR in trial.user_attrs:
        return "surplus"
    return "counted"


def counts_toward_total(trial: FrozenTrial, retried: set[int]) -> bool:
    """Whether ``trial`` is one of the study's ``n_trials`` done (``retried``: :func:`retried_trials`)."""
    return outcome(trial, retried) == "counted"


def tally(trials: Sequence[FrozenTrial], *, below: int | None = None) -> tuple[int, int]:
    """``(done, running)`` of ``trials``, or of those numbered below ``below``."""
    retried = retried_trials(trials)
    counted = [t for t in trials if below is None or t.number < below]
    done = sum(counts_toward_total(t, retried) for t in counted)
    return done, sum(t.state == TrialState.RUNNING for t in counted)


def trial_counts(study: optuna.Study) -> tuple[int, int]:
    """``(done, running)``: the study's trials that count toward ``n_trials``, and those in progress."""
    return tally(study.get_trials(deepcopy=False))


def past_total(trials: Sequence[FrozenTrial], number: int, n_trials: int) -> bool:
    """Whether trial ``number`` is surplus: ``n_trials`` trials numbered before it already count or run."""
    return sum(tally(trials, below=number)) >= n_trials
