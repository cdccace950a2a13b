"""The claim primitive on both backends (Optuna storage: a journal file, PostgreSQL; a folder), with real processes,
and the duplicate-training claim built on it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from blocknas.search.pause_points import PAUSE_ENV
from blocknas.search.study import TRAINING_KEY_ATTR
from blocknas.search.study.duplicates import find_original, release_training_claims
from blocknas.search.tracking import Claims, FileClaims, Holder, StudyClaims, open_storage, worker_id

CHILD = """
import sys
from blocknas.search.tracking import FileClaims, StudyClaims, open_storage
kind, path, scope = sys.argv[1:4]
claims = FileClaims(path) if kind == "file" else StudyClaims(open_storage(path), scope)
claim = claims.claim("k")
print("held" if claim.held else f"waiting {claim.holder}")
"""


@pytest.fixture(params=["journal", "postgres", "file"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """``(backend, storage URL or folder, study name)``; PostgreSQL's database is shared: a fresh study name."""
    if request.param == "postgres":
        return request.param, request.getfixturevalue("postgres_url"), f"s-{uuid.uuid4().hex[:8]}"
    return request.param, str(tmp_path / ("claims" if request.param == "file" else "optuna.journal")), "s"


def _claims(where: tuple[str, str, str]) -> Claims:
    kind, path, scope = where
    return FileClaims(path) if kind == "file" else StudyClaims(open_storage(path), scope)


def _sign(claims: Claims, key: str, generation: int, worker: str, note: str = "") -> None:
    """A claim made by another process."""
    assert claims._create(claims._name(key, generation), Holder(worker, note, "t").text())


def _dead_worker() -> str:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return f"{socket.gethostname()}:{dead.pid}"


def _stopped(process: subprocess.Popen[str]) -> bool:
    """Whether ``process`` is stopped (``SIGSTOP``): state ``T`` in ``/proc/<pid>/stat``."""
    return Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_one_holder_a_live_one_is_waited_for_a_dead_one_taken_over(where: tuple[str, str, str]) -> None:
    claims = _claims(where)
    live = f"{socket.gethostname()}:{os.getppid()}"
    _sign(claims, "a", 0, live)
    assert claims.claim("a").holder == Holder(live, "", "t")
    _sign(claims, "b", 0, _dead_worker())
    claim = claims.claim("b")
    assert claim.held and claim.generation == 1  # taken over, as claim 1
    assert claims.claim("b").held  # this process's own claim
    claims.release("b")
    claims.release("a")  # not this process's: kept
    assert claims.generations("b") == [] and claims.generations("a") == [0]
    claims.clear("a")
    assert claims.keys() == []


def test_another_hosts_holder_is_gone_only_on_the_callers_evidence(where: tuple[str, str, str]) -> None:
    claims = _claims(where)
    _sign(claims, "k", 0, "other-host:1", note="7")
    held = claims.claim("k").holder
    assert held is not None and held.note == "7" and held.alive() is None
    assert claims.claim("k", gone=lambda holder: holder.note == "7").held
    claims.clear("k")


def test_a_takeover_of_a_released_chain_is_withdrawn(where: tuple[str, str, str]) -> None:
    """A taker stops (``$BLOCKNAS_PAUSE_AT=claim-takeover``) between finding claim 0's holder dead and
    making claim 1; meanwhile the chain is released and claim 0 made again by a live process. Continued,
    the taker must not hold claim 1 as well: it withdraws it and waits for the live holder. (Without the
    check that the claim below still holds the record judged dead, both held the key.)"""
    claims = _claims(where)
    _sign(claims, "k", 0, _dead_worker())
    env = {**os.environ, PAUSE_ENV: "claim-takeover"}
    taker = subprocess.Popen([sys.executable, "-c", CHILD, *where], env=env, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _stopped(taker):
            assert taker.poll() is None and time.monotonic() < deadline, "the taker never reached the pause point"
            time.sleep(0.05)
        claims.clear("k")  # the work done, the chain released
        assert claims.claim("k").held  # claimed again, as claim 0, by this live process
        os.kill(taker.pid, signal.SIGCONT)
        out, _ = taker.communicate(timeout=120)
    finally:
        taker.kill()
    assert out.split() == ["waiting", worker_id()], out
    assert claims.generations("k") == [0]
    claims.clear("k")


def test_a_failed_holders_training_claim_is_taken_over_and_the_result_taken(tmp_path: Path) -> None:
    """The duplicate-training claim: the holder's trial (another host) fails, a waiter takes over and
    trains; once its result is recorded the claim is deleted and the next trial takes that result."""
    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    holder = study.ask()
    holder.set_user_attr(TRAINING_KEY_ATTR, {"key": "k"})
    claims = StudyClaims(storage, "s")
    _sign(claims, "train:k", 0, "other-host:1", note=str(holder.number))
    waiter = study.ask()
    study.tell(holder, state=TrialState.FAIL)  # its worker died: failed by Optuna's heartbeat
    assert find_original(waiter, "k", poll_s=0.01) is None  # taken over: the waiter trains
    top = claims.top("train:k")
    assert top is not None and top[0] == 1 and top[1].note == str(waiter.number)
    study.tell(waiter, 0.5)
    release_training_claims(study)
    assert optuna.get_all_study_names(storage) == ["s"]
    third = study.ask()
    original = find_original(third, "k")
    assert original is not None and original.number == waiter.number
    assert optuna.get_all_study_names(storage) == ["s"]
    # a holder of this host whose process is gone: taken over at once, its trial still RUNNING
    running = study.ask()
    _sign(claims, "train:j", 0, _dead_worker(), note=str(running.number))
    assert find_original(third, "j", poll_s=0.01) is None
    assert claims.generations("train:j") == [0, 1]
    study.tell(third, 0.7)
    release_training_claims(study)
    assert optuna.get_all_study_names(storage) == ["s"]
