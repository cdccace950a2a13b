"""No architecture is trained twice in a study under the same training key.

A small space, a converged sampler, a retried trial or two workers drawing at once all
propose architectures the study has already evaluated. Training one again under the same
seed, data and settings only reproduces a recorded result, so the trial takes the
recorded values instead (user attr ``duplicate_of``, MLflow tag ``blocknas.duplicate_of``)
and counts as a trial: the sampler is told the truth about that point, and a small space
still ends. (Asking the sampler again inside the trial is not possible define-by-run, and
pruning the duplicate would burn a trial and hide the value from the sampler.)

Across workers, the trial about to train claims ``train:<training key>`` with the claim
primitive (:class:`~blocknas.search.tracking.StudyClaims`, signed with its trial number).
The first to claim it trains; the others wait for the holder's trial to finish and take its
recorded result. A holder whose trial failed (its worker died: a dead ``host:pid`` here,
Optuna's heartbeat failing it elsewhere, or it raised) is taken over: the waiter trains. The
claim is deleted once the result is recorded (:func:`release_training_claims`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from blocknas.blocks import ArchConfig
from blocknas.search.tracking import RUN_ID_ATTR, Holder, StudyClaims, StudyTracker, fail_abandoned_trials, worker_id
from blocknas.search.tracking.names import (
    DUPLICATE_OF_TAG,
    FINGERPRINT_ID_TAG,
    FINGERPRINT_TAG_PREFIX,
    STATE_COMPLETE,
    STATE_TAG,
)

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

__all__ = ["find_original", "release_training_claims", "take_recorded", "training_key"]

# what a duplicate copies from its original: the measured or predicted latency, the budget verdict
_COPIED_ATTRS = (
    LATENCY_ATTR,
    LATENCY_MEASURED_ATTR,
    LATENCY_PREDICTED_ATTR,
    LATENCY_CALIBRATED_ATTR,
    FINGERPRINT_ATTR,
    OVER_BUDGET_ATTR,
)

_DONE = (TrialState.COMPLETE, TrialState.PRUNED)
TRAIN_CLAIM = "train:"  # the claim on a training key: ``train:<key>``

log = logging.getLogger(__name__)


def training_key(arch: ArchConfig, seed: int, settings: Mapping[str, Any]) -> str:
    """What decides a trial's result: the architecture, the seed and the data/training/latency settings."""
    text = json.dumps({"arch": arch.to_dict(), "seed": seed, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _key(trial: FrozenTrial) -> str | None:
    value = trial.user_attrs.get(TRAINING_KEY_ATTR)
    return value.get("key") if isinstance(value, dict) else None


def _recorded(trials: list[FrozenTrial], key: str) -> FrozenTrial | None:
    """The finished trial that trained ``key`` (not a duplicate), or None."""
    done = [t for t in trials if t.state in _DONE and _key(t) == key and t.user_attrs.get(DUPLICATE_OF_ATTR) is None]
    return min(done, key=lambda t: t.number, default=None)


def _claims(study: optuna.Study) -> StudyClaims:
    return StudyClaims(study._storage, study.study_name)


def find_original(trial: Trial, key: str, *, poll_s: float = 0.5, recover_s: float = 5.0) -> FrozenTrial | None:
    """Claim ``key`` for ``trial``; the finished trial whose result it should take, or None to train.

    Args:
        trial: The running trial, about to train.
        key: Its :func:`training_key`.
        poll_s: Seconds between looks at the study while waiting.
        recover_s: Seconds between attempts to fail the trials of dead workers while waiting.

    Returns:
        The COMPLETE or PRUNED trial that trained ``key``, or None if this trial holds the claim.
    """
    study, claims, name = trial.study, _claims(trial.study), TRAIN_CLAIM + key
    trial.set_user_attr(TRAINING_KEY_ATTR, {"key": key})

    def gone(holder: Holder) -> bool:  # its trial failed: it raised, or its worker died (heartbeat, host:pid)
        trials = study.get_trials(deepcopy=False)
        number = int(holder.note) if holder.note.isdigit() else -1
        return not 0 <= number < len(trials) or trials[number].state == TrialState.FAIL

    last_recovery, announced = time.monotonic(), None
    while True:
        original = _recorded(study.get_trials(deepcopy=False), key)
        if original is None:
            claim = claims.claim(
                name, note=str(trial.number), gone=gone, doing=f"training the key of trial {trial.number}"
            )
            if claim.held:
                original = _recorded(study.get_trials(deepcopy=False), key)  # looked at again, under the claim
                if original is None:
                    if trial.user_attrs.get(DUPLICATE_OF_ATTR) is not None:  # inherited by a retry of a duplicate
                        trial.set_user_attr(DUPLICATE_OF_ATTR, None)
                    return None
        if original is not None:
            if claims.generations(name):  # left by a holder killed after its result was recorded
                claims.clear(name)
            return original
        if claim.holder != announced:
            log.info(
                "trial %d waits for trial %s (worker %s): same training key",
                trial.number,
                claim.holder.note,
                claim.holder,
            )
            announced = claim.holder
        if time.monotonic() - last_recovery >= recover_s:  # a dead holder's trial must fail for a takeover
            optuna.storages.fail_stale_trials(study)
            fail_abandoned_trials(study)
            last_recovery = time.monotonic()
        time.sleep(poll_s)


def release_training_claims(study: optuna.Study) -> None:
    """Delete the study's training claims no trial needs: the result is recorded, or this worker's trial ended.

    Run after each trial: a result is recorded when the trial is told, after the objective returns.
    """
    claims = _claims(study)
    keys = claims.keys(TRAIN_CLAIM)
    if not keys:
        return
    trials, me = study.get_trials(deepcopy=False), worker_id()
    for name in keys:
        top = claims.top(name)
        if _recorded(trials, name[len(TRAIN_CLAIM) :]) is not None:
            claims.clear(name)
        elif top is not None and top[1].worker == me and top[1].note.isdigit():
            number = int(top[1].note)
            if number < len(trials) and trials[number].state.is_finished():
                claims.release(name, upto=top[0])


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
    tags = {DUPLICATE_OF_TAG: str(original.number), **_device_tags(tracker, original)}
    if original.state == TrialState.PRUNED or original.values is None:
        tracker.log(run_id, tags=tags)
        raise optuna.TrialPruned(f"duplicate of trial {original.number}, which was pruned")
    tracker.log(run_id, metrics=dict(zip(metric_names, original.values)), tags={**tags, STATE_TAG: STATE_COMPLETE})
    return tuple(original.values)


def _device_tags(tracker: StudyTracker, original: FrozenTrial) -> dict[str, str]:
    """The original run's device fingerprint tags: a duplicate's latency was measured where the original's was."""
    run_id = original.user_attrs.get(RUN_ID_ATTR)
    if run_id is None:
        return {}
    tags = tracker.run_tags(run_id)
    return {k: v for k, v in tags.items() if k.startswith(FINGERPRINT_TAG_PREFIX) or k == FINGERPRINT_ID_TAG}
