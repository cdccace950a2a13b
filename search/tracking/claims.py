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
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage

from .masking import mask_url
from .storage import StorageError, _local_pid, _pid_alive, worker_id

__all__ = ["SETUP_COMPLETE_ATTR", "complete_setup", "setup_wait_s"]

log = logging.getLogger(__name__)

SETUP_COMPLETE_ATTR = "blocknas.setup_complete"  # study user attr, written when set-up is done
CLAIM_OWNER_ATTR = "blocknas.claim_owner"  # user attr of a claim study: the ``host:pid`` holding it
WAIT_ENV = "BLOCKNAS_SETUP_WAIT_S"


def setup_wait_s() -> float:
    """How long to wait for a set-up claimed by a worker whose liveness cannot be checked."""
    return float(os.environ.get(WAIT_ENV) or 1800)


def claim_name(study_name: str, generation: int) -> str:
    return f"{study_name}/setup-claim/{generation}"


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
    limit = setup_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + limit
    announced = None
    while not study.user_attrs.get(SETUP_COMPLETE_ATTR):
        holder, generation = _claim(storage, study.study_name)
        if holder is None:
            ran = not study.user_attrs.get(SETUP_COMPLETE_ATTR)  # checked again, now under the claim
            if ran:
                set_up()
                study.set_user_attr(SETUP_COMPLETE_ATTR, True)
            _release(storage, study.study_name, generation)
            return ran
        if holder != announced:
            log.info("waiting for worker %s to finish setting up study %s", holder, study.study_name)
            announced = holder
        if _local_pid(holder) is None and time.monotonic() >= deadline:
            raise StorageError(
                mask_url(
                    f"study {study.study_name!r} is still being set up by worker {holder} after {limit:.0f} s; "
                    f"if that worker is gone, delete its claim (optuna delete-study --study-name "
                    f"'{claim_name(study.study_name, generation)}' --storage URL) and start again, or wait "
                    f"longer with ${WAIT_ENV}"
                )
            )
        time.sleep(poll_s)
    _release_leftovers(storage, study.study_name)
    return False


def _claim(storage: BaseStorage, study_name: str) -> tuple[str | None, int]:
    """``(None, n)`` if this worker now holds claim ``n``, else ``(holder, n)``: a live or unknown holder."""
    me = worker_id()
    generation = 0
    while True:
        name = claim_name(study_name, generation)
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


def _release(storage: BaseStorage, study_name: str, generation: int) -> None:
    """Delete the claims up to ``generation`` (set-up is complete: nobody needs them)."""
    for n in range(generation + 1):
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=claim_name(study_name, n), storage=storage)


def _release_leftovers(storage: BaseStorage, study_name: str) -> None:
    """Delete the claims of a study whose set-up is complete (a worker killed before releasing them leaves some)."""
    prefix = claim_name(study_name, 0)[:-1]
    for name in optuna.get_all_study_names(storage):
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            log.info("deleting claim %s left by a worker that finished setting up study %s", name, study_name)
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)
