"""A study's set-up done exactly once, by whichever worker finds it undone.

Set-up (the MLflow parent run, the baseline trials, ``study.yaml``) is several writes to two
stores, and a worker can die between any two of them. So it is done under a *claim* held by
one worker at a time, every step checks whether it is already done, and a study attribute
written last (:data:`SETUP_COMPLETE_ATTR`) says that nothing is left. A worker that finds it
absent takes the claim, or waits while the worker holding it is alive, or takes over from a
dead one.

The claim is an Optuna study named ``<study>/setup-claim/<n>``. Creating a study is the one
write every Optuna storage makes atomic with a uniqueness check (a unique index on RDB, the
journal's lock and replay on journal files and Redis): of many workers creating the same
name exactly one succeeds, the others get ``DuplicatedStudyError``. (``set_user_attr`` is not
compare-and-set: two workers would both believe they won.) The name cannot be a user's
study, whose names have no ``/``. The winner signs the claim with its ``host:pid``; a claim
whose signer is a dead process of this host is superseded by creating claim ``n + 1``, again
atomically, so two workers that both find it dead cannot both take over. Whether a process
on another host lives cannot be seen from here: such a claim is waited for up to
``$BLOCKNAS_SETUP_WAIT_S`` seconds (default 1800), then the error says how to release it.
The claims are deleted once set-up is complete, and a worker that finds set-up complete deletes
any claim still left: one killed between marking set-up complete and deleting its claims leaves
them behind, and they would otherwise stay in ``optuna studies`` for good.

A study's *definition* (what its trials are trained and judged under) is stored the same way,
by :func:`store_once` under its own claim (``<study>/definition-claim/<n>``): last-writer-wins
``set_user_attr`` would let a worker that found none store its own while the creator, paused
between creating the study and storing its definition, stores another. Under the claim, the
first worker to get there stores its definition and every other reads that one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage

from .masking import mask_url
from .storage import StorageError, _local_pid, _pid_alive, worker_id

__all__ = ["SETUP_COMPLETE_ATTR", "complete_setup", "setup_wait_s", "store_once"]

log = logging.getLogger(__name__)

SETUP_COMPLETE_ATTR = "blocknas.setup_complete"  # study user attr, written when set-up is done
CLAIM_OWNER_ATTR = "blocknas.claim_owner"  # user attr of a claim study: the ``host:pid`` holding it
WAIT_ENV = "BLOCKNAS_SETUP_WAIT_S"


def setup_wait_s() -> float:
    """How long to wait for a set-up claimed by a worker whose liveness cannot be checked."""
    return float(os.environ.get(WAIT_ENV) or 1800)


def claim_name(study_name: str, generation: int, kind: str = "setup") -> str:
    return f"{study_name}/{kind}-claim/{generation}"


def complete_setup(
    study: optuna.Study,
    storage: BaseStorage,
    set_up: Callable[[], None],
    *,
    wait_s: float | None = None,
    poll_s: float = 0.5,
) -> bool:
    """Run ``set_up`` (idempotent steps) unless the study's set-up is complete; ``True`` if this worker ran it.

    Returns once set-up is complete, by this worker or another.

    Args:
        study: The study being set up.
        storage: Its storage (the claim is created there).
        set_up: The set-up steps; each must skip what is already done (a claimant may have died midway).
        wait_s: Longest wait for a claim of another host or an unsigned one (default :func:`setup_wait_s`).
        poll_s: Seconds between looks at the claim.

    Raises:
        StorageError: Set-up is still incomplete after ``wait_s`` under a claim whose holder cannot be checked.
    """

    def steps() -> None:
        set_up()
        study.set_user_attr(SETUP_COMPLETE_ATTR, True)

    def done() -> bool:
        return bool(study.user_attrs.get(SETUP_COMPLETE_ATTR))

    return _once(study, storage, "setup", done, steps, wait_s=wait_s, poll_s=poll_s)


def store_once(
    study: optuna.Study,
    storage: BaseStorage,
    key: str,
    value: Any,
    *,
    unless: tuple[str, ...] = (),
    wait_s: float | None = None,
    poll_s: float = 0.5,
) -> Any:
    """Store ``value`` as the study's user attribute ``key`` unless some worker stored one first; the stored one.

    First writer wins, across workers and hosts: the value is stored under a claim (the
    ``definition`` claim, shared by every key), after looking again under it.

    Args:
        study: The study.
        storage: Its storage (the claim is created there).
        key: The user attribute.
        value: What to store if the study holds no ``key``.
        unless: Attributes that, present, mean the study is of another kind: nothing is stored.
        wait_s: Longest wait for a claim of another host or an unsigned one (default :func:`setup_wait_s`).
        poll_s: Seconds between looks at the claim.

    Returns:
        The study's ``key``: ``value`` or the one stored first; None if it holds one of ``unless`` instead.

    Raises:
        StorageError: Nothing is stored after ``wait_s`` under a claim whose holder cannot be checked.
    """

    def stored() -> bool:
        return any(k in study.user_attrs for k in (key, *unless))

    _once(study, storage, "definition", stored, lambda: study.set_user_attr(key, value), wait_s=wait_s, poll_s=poll_s)
    return study.user_attrs.get(key)


def _once(
    study: optuna.Study,
    storage: BaseStorage,
    kind: str,
    done: Callable[[], bool],
    act: Callable[[], None],
    *,
    wait_s: float | None,
    poll_s: float,
) -> bool:
    """Run ``act`` under the study's ``kind`` claim unless ``done()``; ``True`` if this worker ran it."""
    limit = setup_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + limit
    announced = None
    while not done():
        holder, generation = _claim(storage, study.study_name, kind)
        if holder is None:
            ran = not done()  # checked again, now under the claim
            if ran:
                act()
            _release(storage, study.study_name, generation, kind)
            return ran
        if holder != announced:  # a definition is one write: waiting for it is not news
            level = logging.INFO if kind == "setup" else logging.DEBUG
            log.log(level, "waiting for worker %s to finish setting up study %s (%s)", holder, study.study_name, kind)
            announced = holder
        if _local_pid(holder) is None and time.monotonic() >= deadline:
            raise StorageError(
                mask_url(
                    f"study {study.study_name!r} is still being set up by worker {holder} ({kind} claim) after "
                    f"{limit:.0f} s; if that worker is gone, delete its claim (optuna delete-study --study-name "
                    f"'{claim_name(study.study_name, generation, kind)}' --storage URL) and start again, or wait "
                    f"longer with ${WAIT_ENV}"
                )
            )
        time.sleep(poll_s)
    _release_leftovers(storage, study.study_name, kind)
    return False


def _claim(storage: BaseStorage, study_name: str, kind: str) -> tuple[str | None, int]:
    """``(None, n)`` if this worker now holds claim ``n``, else ``(holder, n)``: a live or unknown holder."""
    me = worker_id()
    generation = 0
    while True:
        name = claim_name(study_name, generation, kind)
        try:
            claim = optuna.create_study(study_name=name, storage=storage)
        except DuplicatedStudyError:
            try:
                owner = optuna.load_study(study_name=name, storage=storage).user_attrs.get(CLAIM_OWNER_ATTR)
            except KeyError:  # released between the two calls (set-up complete): look again
                return "a worker that just finished", generation
            if owner == me:
                return None, generation
            pid = _local_pid(owner) if owner else None
            if pid is None or pid == os.getpid() or _pid_alive(pid):
                return owner or "a worker that has not signed its claim yet", generation
            log.warning("worker %s died setting up study %s; taking over", owner, study_name)
            generation += 1
            continue
        claim.set_user_attr(CLAIM_OWNER_ATTR, me)
        return None, generation


def _release(storage: BaseStorage, study_name: str, generation: int, kind: str) -> None:
    """Delete the claims up to ``generation`` (the step is done: nobody needs them)."""
    for n in range(generation + 1):
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=claim_name(study_name, n, kind), storage=storage)


def _release_leftovers(storage: BaseStorage, study_name: str, kind: str) -> None:
    """Delete the claims of a study whose step is done (a worker killed before releasing them leaves some)."""
    prefix = claim_name(study_name, 0, kind)[:-1]
    for name in optuna.get_all_study_names(storage):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            log.info("deleting claim %s left by a worker that finished setting up study %s", name, study_name)
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)
