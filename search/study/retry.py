"""An interrupted trial is retried, as a trial of a dead worker is.

Ctrl-C or SIGTERM (a scheduler's preemption, a chaos test) fails the running trial cleanly;
without a retry that FAIL would count toward ``n_trials`` and the study would end short of
good trials. The retry is queued with Optuna's own :class:`~optuna.storages.RetryHeartbeatStaleTrialCallback`
bookkeeping (``failed_trial``, ``retry_history``), so :func:`~blocknas.search.study.tally.retried_trials`
and ``trial_counts`` count the retry instead of the interrupted trial, exactly as for a
trial whose worker was killed.
"""

from __future__ import annotations

from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import Trial

__all__ = ["retry_interrupted"]


def retry_interrupted(trial: Trial) -> None:
    """Queue a retry of ``trial`` (still RUNNING, about to be failed as interrupted), same parameters."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    RetryHeartbeatStaleTrialCallback()(trial.study, frozen)  # what RDB storage runs for a dead worker's trial
