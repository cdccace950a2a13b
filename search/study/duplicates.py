"""No architecture is trained twice in a study under the same training key.

A small space, a converged sampler, a retried trial or two workers drawing at once all
propose architectures the study has already evaluated. Training one again under the same
seed, data and settings only reproduces a recorded result, so the trial takes the
recorded values instead (user attr ``duplicate_of``, MLflow tag ``blocknas.duplicate_of``)
and counts as a trial: the sampler is told the truth about that point, and a small space
still ends. (Asking the sampler again inside the trial is not possible define-by-run, and
pruning the duplicate would burn a trial and hide the value from the sampler.)

Across workers, the trials with one key agree on a single owner with Lamport's bakery
rule over Optuna trial attributes (plain reads and writes, no compare-and-set needed):
a trial publishes ``{key, ticket}`` with ticket = 1 + the largest ticket in the study,
waits while any other RUNNING trial has not published yet (it may be choosing its
ticket), and the lowest ``(ticket, number)`` among the live trials with its key owns it.
The others wait for the owner to finish; if it fails (its worker died), the next in line
trains. A RUNNING trial that never publishes (a dead worker not yet failed) is waited for
at most ``settle_s``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from blocknas.blocks import ArchConfig
from blocknas.search.tracking import StudyTracker, fail_abandoned_trials
from blocknas.search.tracking.names import DUPLICATE_OF_TAG, STATE_TAG

from .attrs import (
    DUPLICATE_OF_ATTR,
    FINGERPRINT_ATTR,
    LATENCY_ATTR,
    LATENCY_CALIBRATED_ATTR,
    LATENCY_MEASURED_ATTR,
    LATENCY_PREDICTED_ATTR,
    OVER_BUDGET_ATTR,
    TRAINING_KEY_ATTR,
)

__all__ = ["find_original", "take_recorded", "training_key"]

# what a duplicate copies from its original: the measured or predicted latency, the budget verdict
_COPIED_ATTRS = (
    LATENCY_ATTR,
    LATENCY_MEASURED_ATTR,
    LATENCY_PREDICTED_ATTR,
    LATENCY_CALIBRATED_ATTR,
    FINGERPRINT_ATTR,
    OVER_BUDGET_ATTR,
)

_LIVE = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def training_key(arch: ArchConfig, seed: int, settings: Mapping[str, Any]) -> str:
    """What decides a trial's result: the architecture, the seed and the data/training/latency settings."""
    text = json.dumps({"arch": arch.to_dict(), "seed": seed, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _ticket(trial: FrozenTrial) -> int | None:
    claim = trial.user_attrs.get(TRAINING_KEY_ATTR)
    return int(claim["ticket"]) if isinstance(claim, dict) else None


def find_original(
    trial: Trial, key: str, *, poll_s: float = 0.5, settle_s: float = 60.0, recover_s: float = 5.0
) -> FrozenTrial | None:
    """Claim ``key`` for ``trial``; the finished trial whose result it should take, or None to train.

    Args:
        trial: The running trial, about to train.
        key: Its :func:`training_key`.
        poll_s: Seconds between looks at the study while waiting.
        settle_s: Longest wait for a RUNNING trial that has not published its key.
        recover_s: Seconds between attempts to fail the trials of dead workers while waiting.

    Returns:
        The COMPLETE or PRUNED owner of ``key``, or None if this trial owns it.
    """
    study = trial.study
    tickets = [t for t in map(_ticket, study.get_trials(deepcopy=False)) if t is not None]
    mine = (1 + max(tickets, default=0), trial.number)
    trial.set_user_attr(TRAINING_KEY_ATTR, {"key": key, "ticket": mine[0]})
    start = last_recovery = time.monotonic()
    while True:
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        unsettled = any(t.state == TrialState.RUNNING and _ticket(t) is None for t in others)
        if not (unsettled and time.monotonic() - start < settle_s):
            ahead = [
                t
                for t in others
                if t.state in _LIVE
                and t.user_attrs.get(TRAINING_KEY_ATTR, {}).get("key") == key
                and (_ticket(t) or 0, t.number) < mine
            ]
            if not ahead:
                if trial.user_attrs.get(DUPLICATE_OF_ATTR) is not None:  # inherited by a retry of a duplicate
                    trial.set_user_attr(DUPLICATE_OF_ATTR, None)
                return None
            owner = min(ahead, key=lambda t: (_ticket(t) or 0, t.number))
            if owner.state != TrialState.RUNNING:
                return owner
        if time.monotonic() - last_recovery >= recover_s:  # a dead owner must fail for the next in line
            optuna.storages.fail_stale_trials(study)
            fail_abandoned_trials(study)
            last_recovery = time.monotonic()
        time.sleep(poll_s)


def take_recorded(
    trial: Trial, original: FrozenTrial, tracker: StudyTracker, run_id: str, metric_names: list[str]
) -> tuple[float, ...]:
    """Give ``trial`` the recorded outcome of ``original``: its values, or its pruning.

    Args:
        trial: The duplicate, running.
        original: The finished trial with the same training key.
        tracker: Where the duplicate's MLflow child run is.
        run_id: That run.
        metric_names: The study's objective names (``accuracy``, ``latency_ms``), logged with the values.

    Returns:
        The original's values.

    Raises:
        optuna.TrialPruned: The original was pruned (over budget, or by the pruner).
    """
    trial.set_user_attr(DUPLICATE_OF_ATTR, original.number)
    for key in _COPIED_ATTRS:
        if key in original.user_attrs:
            trial.set_user_attr(key, original.user_attrs[key])
    for key, value in original.constraints.items():
        trial.set_constraint(key, value)
    tags = {DUPLICATE_OF_TAG: str(original.number)}
    if original.state == TrialState.PRUNED or original.values is None:
        tracker.log(run_id, tags=tags)
        raise optuna.TrialPruned(f"duplicate of trial {original.number}, which was pruned")
    tracker.log(run_id, metrics=dict(zip(metric_names, original.values)), tags={**tags, STATE_TAG: "complete"})
    return tuple(original.values)
