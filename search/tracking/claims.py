"""One claim primitive: a key claimed by exactly one live process, taken over from a dead one.

Every piece of work that many workers may find undone at once (a study's set-up, its
definition, training one architecture, one ``blocknas validate`` training) is done under a
claim on its key. :meth:`Claims.claim` returns a :class:`Claim`: held by this process, or
held by another (its :class:`Holder`, to wait for). The holder checks again, under the claim,
whether the work is still undone, does it, records the result, and releases the claim
(:meth:`Claims.release`); a waiter looks again later and finds the work done.

A claim is the record ``<key>.<n>``, signed with its holder's ``host:pid``, a random token and
a note (what it is doing, e.g. the trial number). Two backends share the logic and differ only
in their one atomic create-if-absent:

* :class:`StudyClaims`: an Optuna study named ``<study>/<key>-claim/<n>``. Creating a study
  is the one write every Optuna storage makes atomic with a uniqueness check (a unique index
  on RDB, the journal's lock and replay on journal files and Redis); ``set_user_attr`` is not
  compare-and-set. The signature is a user attribute written just after (see *unsigned*).
* :class:`FileClaims`: the file ``<folder>/<key>.<n>.claim``, made by hard-linking a signed
  temporary file to its name (``link`` fails when the name exists): never seen unsigned.

Takeover. A holder is gone when it is a dead process of this host (``host:pid``), when the
caller's ``gone`` says so (another host's worker: its trial failed by Optuna's heartbeat), or
when its claim stayed unsigned past :data:`UNSIGNED_GRACE_S`. A gone holder's claim ``n`` is
superseded by creating claim ``n + 1``, atomically, so two workers that both find it gone
cannot both take over. Deleting a chain (a release) races with a takeover, so a claim just
made is kept only if (1) the claim below it still carries the record judged gone and (2) no
claim above it exists; otherwise it is withdrawn and the caller waits. A release deletes the
chain bottom-up, up to the releaser's own claim, never one above it.

Whether a process on another host lives cannot be seen from here: with no ``gone`` evidence
its claim is held until it is released, deleted by hand, or the caller's wait runs out.

On top of it, a study's *set-up* (:func:`complete_setup`, key ``setup``) and *definition*
(:func:`store_once`, key ``definition``) are done once: every step checks whether it is done,
a study attribute written last says so (:data:`SETUP_COMPLETE_ATTR`), and a worker that finds
the work done deletes claims left behind (one killed after finishing leaves them, and they
would stay in ``optuna studies`` for good).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from blocknas.search.pause_points import pause_point

from .masking import mask_url
from .storage import StorageError, _local_pid, _pid_alive, worker_id

__all__ = [
    "SETUP_COMPLETE_ATTR",
    "Claim",
    "Claims",
    "FileClaims",
    "Holder",
    "StudyClaims",
    "complete_setup",
    "setup_wait_s",
    "store_once",
]

log = logging.getLogger(__name__)

SETUP_COMPLETE_ATTR = "blocknas.setup_complete"  # study user attr, written when set-up is done
CLAIM_OWNER_ATTR = "blocknas.claim_owner"  # user attr of a claim study: its holder's signature
WAIT_ENV = "BLOCKNAS_SETUP_WAIT_S"
UNSIGNED_GRACE_S = 60.0
"""A study claim still unsigned this long after it was first seen belongs to a worker that died signing it."""


@dataclass(frozen=True)
class Holder:
    """Who holds a claim: ``worker`` (``host:pid``; empty while unsigned), its ``note``, its ``token``."""

    worker: str
    note: str = ""
    token: str = ""

    @classmethod
    def parse(cls, text: str) -> Holder:
        worker, token, note = [*text.split(maxsplit=2), "", "", ""][:3]  # written as "worker token note"
        return cls(worker, note, token)

    def text(self) -> str:
        return f"{self.worker} {self.token} {self.note}".strip()

    def alive(self) -> bool | None:
        """Whether the holder's process runs: known on this host only (``None`` elsewhere, or unsigned)."""
        pid = _local_pid(self.worker) if self.worker else None
        return None if pid is None else pid == os.getpid() or _pid_alive(pid)

    def __str__(self) -> str:
        return self.worker or "a worker that has not signed its claim yet"


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`Claims.claim`: ``held`` by this process, or by ``holder``."""

    key: str
    generation: int
    holder: Holder | None = None

    @property
    def held(self) -> bool:
        return self.holder is None


class Claims(ABC):
    """Claims on keys, in one backend; see the module docstring for the protocol."""

    def __init__(self) -> None:
        self._unsigned_since: dict[str, float] = {}

    def claim(
        self, key: str, *, note: str = "", gone: Callable[[Holder], bool] | None = None, doing: str = ""
    ) -> Claim:
        """Claim ``key``: held by this process (a claim it already holds included), or by the returned holder.

        Args:
            key: What is claimed.
            note: What this process does under it (stored with the signature: :attr:`Holder.note`).
            gone: Evidence that a holder whose process cannot be seen from here is gone.
            doing: Words for the log line of a takeover (``"setting up study s"``).
        """
        me = Holder(worker_id(), note, secrets.token_hex(4))
        generation, below = 0, None
        while True:
            name = self._name(key, generation)
            if self._create(name, me.text()):
                if below is not None and self._read(self._name(key, generation - 1)) != below:
                    self._withdraw(name)  # the chain was released meanwhile: look again from the start
                    generation, below = 0, None
                    continue
                above = [g for g in self.generations(key) if g > generation]
                if above:  # superseded (a takeover of an unsigned claim, or one over a released gap)
                    self._withdraw(name)
                    top = self._read(self._name(key, above[-1]))
                    return Claim(key, above[-1], top or Holder(""))
                return Claim(key, generation)
            holder = self._read(name)
            if holder is None:  # released between the two calls: look again from the start
                generation, below = 0, None
                continue
            if holder.worker == me.worker and holder.note == note:  # this process's, for the same work
                if not [g for g in self.generations(key) if g > generation]:
                    return Claim(key, generation)
            elif holder.worker != me.worker and not self._gone(name, holder, gone):
                return Claim(key, generation, holder)
            if holder.worker != me.worker and self._read(self._name(key, generation + 1)) is None:
                how = "died" if holder.worker and holder.alive() is False else "is gone,"
                log.warning("worker %s %s %s; taking over", holder, how, doing or f"holding claim {name}")
            pause_point("claim-takeover")  # a test's race window: judged gone, the next claim not made yet
            below, generation = holder, generation + 1

    def release(self, key: str, *, upto: int | None = None) -> None:
        """Delete the claims of ``key`` bottom-up, up to this process's own (or up to ``upto``).

        Without ``upto`` and with no claim of this process, nothing is deleted. Deleting a claim
        above a live holder's is never done: a release stops at the releaser's claim.
        """
        generations = self.generations(key)
        if upto is None:
            me = worker_id()
            mine = [g for g in generations if (h := self._read(self._name(key, g))) is not None and h.worker == me]
            if not mine:
                return
            upto = mine[-1]
        for generation in generations:
            if generation <= upto:
                self._withdraw(self._name(key, generation))
        self._unsigned_since.clear()

    def clear(self, key: str) -> None:
        """Delete every claim of ``key``: only once its work is done (nobody needs them, a taker finds it done)."""
        generations = self.generations(key)
        if generations:
            self.release(key, upto=generations[-1])

    def top(self, key: str) -> tuple[int, Holder] | None:
        """The highest claim of ``key`` and its holder, or ``None``."""
        for generation in reversed(self.generations(key)):
            holder = self._read(self._name(key, generation))
            if holder is not None:
                return generation, holder
        return None

    def _gone(self, name: str, holder: Holder, gone: Callable[[Holder], bool] | None) -> bool:
        if not holder.worker:  # created, not signed yet (study claims): dead if it stays so
            first = self._unsigned_since.setdefault(name, time.monotonic())
            return time.monotonic() - first > UNSIGNED_GRACE_S
        alive = holder.alive()
        return alive is False or (gone is not None and gone(holder))

    def _withdraw(self, name: str) -> None:
        with contextlib.suppress(KeyError, FileNotFoundError):
            self._delete(name)

    # the backend: one atomic create-if-absent, a read, a delete and a listing
    @abstractmethod
    def keys(self, prefix: str = "") -> list[str]:
        """The keys starting with ``prefix`` that have claims."""

    @abstractmethod
    def _name(self, key: str, generation: int) -> str: ...

    @abstractmethod
    def _create(self, name: str, text: str) -> bool:
        """Make ``name`` signed ``text`` if it does not exist, atomically; whether it was made."""

    @abstractmethod
    def _read(self, name: str) -> Holder | None:
        """``name``'s holder (unsigned: an empty worker), ``None`` if there is no such claim."""

    @abstractmethod
    def _delete(self, name: str) -> None: ...

    @abstractmethod
    def generations(self, key: str) -> list[int]:
        """The generations of ``key``'s claims, ascending."""


class StudyClaims(Claims):
    """Claims of study ``scope``, as Optuna studies ``<scope>/<key>-claim/<n>`` in ``storage``."""

    def __init__(self, storage: BaseStorage, scope: str) -> None:
        super().__init__()
        self.storage, self.scope = storage, scope

    def keys(self, prefix: str = "") -> list[str]:
        start = f"{self.scope}/{prefix}"
        found = (_split(n[len(self.scope) + 1 :]) for n in self._names() if n.startswith(start))
        return sorted({key for key, generation in found if generation is not None})

    def _name(self, key: str, generation: int) -> str:
        return claim_name(self.scope, generation, key)

    def _names(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def _create(self, name: str, text: str) -> bool:
        try:
            study_id = self.storage.create_new_study([StudyDirection.MINIMIZE], name)
        except DuplicatedStudyError:
            return False
        self.storage.set_study_user_attr(study_id, CLAIM_OWNER_ATTR, text)
        return True

    def _read(self, name: str) -> Holder | None:
        try:
            attrs = self.storage.get_study_user_attrs(self.storage.get_study_id_from_name(name))
        except KeyError:
            return None
        return Holder.parse(str(attrs.get(CLAIM_OWNER_ATTR) or ""))

    def _delete(self, name: str) -> None:
        self.storage.delete_study(self.storage.get_study_id_from_name(name))

    def generations(self, key: str) -> list[int]:
        prefix = self._name(key, 0)[:-1]
        return sorted(
            int(n[len(prefix) :]) for n in self._names() if n.startswith(prefix) and n[len(prefix) :].isdigit()
        )


class FileClaims(Claims):
    """Claims as files ``<key>.<n>.claim`` in ``folder`` (created), for work whose results live in files."""

    SUFFIX = ".claim"

    def __init__(self, folder: str | Path) -> None:
        super().__init__()
        self.folder = Path(folder)

    def keys(self, prefix: str = "") -> list[str]:
        found = (_split(p.name[: -len(self.SUFFIX)], ".") for p in self.folder.glob(f"{prefix}*{self.SUFFIX}"))
        return sorted({key for key, generation in found if generation is not None})

    def _name(self, key: str, generation: int) -> str:
        return str(self.folder / f"{key}.{generation}{self.SUFFIX}")

    def _create(self, name: str, text: str) -> bool:
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        tmp.write_text(text)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def _read(self, name: str) -> Holder | None:
        try:
            return Holder.parse(Path(name).read_text())
        except FileNotFoundError:
            return None

    def _delete(self, name: str) -> None:
        Path(name).unlink()

    def generations(self, key: str) -> list[int]:
        middles = (p.name[len(key) + 1 : -len(self.SUFFIX)] for p in self.folder.glob(f"{key}.*{self.SUFFIX}"))
        return sorted(int(m) for m in middles if m.isdigit())


def _split(name: str, sep: str = "-claim/") -> tuple[str, int | None]:
    """``(key, generation)`` of a claim's name (after its scope), generation ``None`` if it is not one."""
    key, found, generation = name.rpartition(sep)
    return key, int(generation) if found and generation.isdigit() else None


def claim_name(study_name: str, generation: int, kind: str = "setup") -> str:
    return f"{study_name}/{kind}-claim/{generation}"


def setup_wait_s() -> float:
    """How long to wait for a set-up claimed by a worker whose liveness cannot be checked."""
    return float(os.environ.get(WAIT_ENV) or 1800)


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
    ``definition`` claim, shared by every key), after looking again under it. (Last-writer-wins
    ``set_user_attr`` would let a worker that found none store its own while the creator, paused
    between creating the study and storing its definition, stores another.)

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
    claims = StudyClaims(storage, study.study_name)
    limit = setup_wait_s() if wait_s is None else wait_s
    deadline = time.monotonic() + limit
    announced = None
    while not done():
        claim = claims.claim(kind, doing=f"setting up study {study.study_name}")
        if claim.held:
            ran = not done()  # checked again, now under the claim
            if ran:
                act()
            claims.clear(kind)  # done: nobody needs the chain
            return ran
        if claim.holder != announced:  # a definition is one write: waiting for it is not news
            level = logging.INFO if kind == "setup" else logging.DEBUG
            log.log(
                level, "waiting for worker %s to finish setting up study %s (%s)", claim.holder, study.study_name, kind
            )
            announced = claim.holder
        if claim.holder is not None and claim.holder.alive() is None and time.monotonic() >= deadline:
            raise StorageError(
                mask_url(
                    f"study {study.study_name!r} is still being set up by worker {claim.holder} ({kind} claim) after "
                    f"{limit:.0f} s; if that worker is gone, delete its claim (optuna delete-study --study-name "
                    f"'{claim_name(study.study_name, claim.generation, kind)}' --storage URL) and start again, or "
                    f"wait longer with ${WAIT_ENV}"
                )
            )
        time.sleep(poll_s)
    if claims.generations(kind):
        log.info("deleting %s claims left by a worker that finished setting up study %s", kind, study.study_name)
        claims.clear(kind)
    return False
