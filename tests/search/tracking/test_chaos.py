"""Chaos, short: 3 workers on PostgreSQL and an MLflow server, a few SIGKILLs and SIGTERMs.

The full run is ``python benchmarks/chaos.py`` (6 workers, 40 trials, 15 kills); this one
checks the same things at a size that fits the suite.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from blocknas.search.tracking import WORKER_ATTR, fail_abandoned_trials
from tests.conftest import load_benchmark

chaos = load_benchmark("chaos")


@pytest.mark.services
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["KILL", "TERM"])
def test_random_kills_lose_and_duplicate_nothing(
    tmp_path: Path, postgres_url: str, mlflow_server: str, sig: signal.Signals
) -> None:
    """Two signals 5-7 s apart: the first as workers finish starting up (~9 s of imports), the
    second among running trials."""
    result = chaos.run_chaos(
        workers=3, trials=6, kills=2, sig=sig, interval_s=(5.0, 7.0), postgres_url=postgres_url, folder=tmp_path,
        timeout_s=240, tracking_uri=mlflow_server,
    )  # fmt: skip
    assert result.problems == [], result
    assert result.kills == 2 and result.finished == 6
    # one child per finished trial, plus one per trial a signal failed after its run was created
    # (one-to-one matching is the doctor's, in result.problems)
    assert result.finished <= result.mlflow_children <= result.finished + result.failed
    assert result.peak_connections is not None and result.peak_connections <= result.connection_bound
    if sig == signal.SIGTERM:
        assert result.retried >= result.interrupted  # each interrupted trial was retried (checked one by one)


def test_a_retry_taken_by_a_live_worker_is_not_failed_as_its_dead_predecessor() -> None:
    """A retry inherits the dead worker's id until its new worker stamps its own; not failed in between."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study()
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR, f"{socket.gethostname()}:{dead.pid}")
    assert [t.number for t in fail_abandoned_trials(study)] == [0]
    retry = study.ask()  # the queued retry, RUNNING in a live worker, still carrying the dead worker's id
    assert retry.number == 1 and retry.user_attrs[WORKER_ATTR].endswith(f":{dead.pid}")
    assert fail_abandoned_trials(study) == []
    study.tell(retry, 1.0)  # before: FAIL, and this tell raised "Cannot tell a FAIL trial"


def test_a_trial_whose_worker_died_before_stamping_it_is_failed_once_it_is_old(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Killed between ``study.ask()`` and its first step: no owner and no heartbeat, so nothing else fails it."""
    from blocknas.search.tracking import storage

    study = optuna.create_study()
    orphan = study.ask()  # never stamped with WORKER_ATTR
    assert fail_abandoned_trials(study) == []  # a live worker stamps within milliseconds: left alone when young
    monkeypatch.setattr(storage, "ORPHAN_GRACE_S", 0.0)
    assert [t.number for t in fail_abandoned_trials(study)] == [orphan.number]
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    assert [t.state for t in study.trials[1:]] == [optuna.trial.TrialState.WAITING]  # re-enqueued
