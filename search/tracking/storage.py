"""Optuna storage from one URL string, with crash recovery.

Accepted forms:

* ``sqlite:///runs/optuna.db``, ``postgresql://user:pw@host/db``, ``mysql://…`` — Optuna's
  RDB storage with heartbeats: a trial whose worker stops beating is failed and retried
  (unless that worker is a live process of this host).
* ``redis://host:6379/0`` — Optuna's journal storage on Redis.
* a file path (``runs/optuna.journal``) or ``journal:PATH`` — Optuna's journal file storage.
  Journal storage has no heartbeat, so each worker records ``host:pid`` on its trials and,
  on start, fails (and retries) RUNNING trials of this host whose process is gone.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import re
import socket
import time
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import FrozenTrial, TrialState

from .attrs import RETRY_HISTORY_ATTR, WORKER_ATTR
from .journal import JournalDamageError, ReadOnlyJournal, open_journal_backend
from .masking import mask_url

__all__ = [
    "RDB_CONNECTIONS_PER_WORKER",
    "StorageError",
    "check_local_store",
    "dispose_storages",
    "fail_abandoned_trials",
    "journal_path",
    "load_study",
    "open_storage",
    "worker_id",
]

log = logging.getLogger(__name__)

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


class StorageError(RuntimeError):
    """The study storage cannot be opened or reached."""


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _scheme(url: str) -> str:
    match = re.match(r"^([a-z][a-z0-9+.-]*)://", url, re.IGNORECASE)
    return match.group(1).split("+")[0].lower() if match else ""


def journal_path(url: str) -> Path | None:
    """The journal file that the storage ``url`` names (absolute), or ``None`` for a database or Redis."""
    scheme = _scheme(url)
    if scheme and scheme != "journal":
        return None
    return Path(url.removeprefix("journal:").removeprefix("//")).resolve()


def open_storage(url: str, *, heartbeat_interval: int = 60, max_retry: int = 1, read_only: bool = False) -> BaseStorage:
    """Open (and create if needed) the Optuna storage named by ``url``.

    Args:
        url: See the module docstring.
        heartbeat_interval: Seconds between heartbeats on RDB storage; a trial silent for
            twice that long is failed and retried, unless its worker is a live process of this host.
        max_retry: How many times a trial whose worker died is retried.
        read_only: Read an existing journal file's records as they are (see :class:`ReadOnlyJournal`):
            nothing is repaired, created or written. Opening a database or Redis writes nothing either way.
    """
    scheme = _scheme(url)
    try:
        if scheme in RDB_SCHEMES:
            if scheme == "sqlite" and ":///" in url and ":memory:" not in url:
                # An absolute file, so the storage keeps working if the process changes directory.
                db = Path(url.split(":///", 1)[1]).resolve()
                db.parent.mkdir(parents=True, exist_ok=True)
                url = f"{url.split(':///', 1)[0]}:///{db}"
            return _rdb_storage(url, scheme, heartbeat_interval, max_retry)
        if scheme == "redis":
            import redis

            redis.Redis.from_url(url).ping()  # fail now, with a clear message, not at the first trial
            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        if scheme and scheme != "journal":
            raise StorageError(
                f"unsupported storage scheme {scheme!r} in {mask_url(url)!r}; use sqlite://, postgresql://, "
                "mysql://, redis:// or a journal file path"
            )
        path = journal_path(url)
        assert path is not None  # every other scheme is handled above
        if read_only:
            return optuna.storages.JournalStorage(ReadOnlyJournal(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(open_journal_backend(path))
    except StorageError:
        raise
    except JournalDamageError as exc:  # says what and where itself
        raise StorageError(str(exc)) from None
    except Exception as exc:  # SQLAlchemy / redis / OS errors all mean "cannot use this storage"
        if "too many clients" in str(exc) or "Too many connections" in str(exc):
            raise StorageError(
                f"cannot open study storage {mask_url(url)}: the database server refused another connection "
                f"(PostgreSQL's max_connections / MySQL's max_connections is reached). Each blocknas worker holds "
                f"at most {RDB_CONNECTIONS_PER_WORKER} connections to the study storage; raise max_connections to at "
                f"least workers × {RDB_CONNECTIONS_PER_WORKER} + what other clients use, or run fewer workers"
            ) from None
        # The driver's text may repeat the URL or its password: mask the whole message.
        raise StorageError(mask_url(f"cannot open study storage {url}: {type(exc).__name__}: {exc}")) from None


RDB_POOL_SIZE = 2  # one trial at a time (the main thread) plus the heartbeat thread
RDB_MAX_OVERFLOW = 1  # a short burst, e.g. a report read while a trial is being told
RDB_CONNECTIONS_PER_WORKER = RDB_POOL_SIZE + RDB_MAX_OVERFLOW
_rdb_storages: dict[tuple[str, int, int], optuna.storages.RDBStorage] = {}


def _rdb_storage(url: str, scheme: str, heartbeat_interval: int, max_retry: int) -> optuna.storages.RDBStorage:
    """One RDB storage (one SQLAlchemy engine and pool) per URL and settings in this process, disposed at exit.

    Opening a storage builds an engine with its own connection pool; a process that opened
    one per call (a polling loop, a report, every worker restart) would hold connections
    until the server refused more. The pool is sized for what a worker does.
    """
    key = (url, heartbeat_interval, max_retry)
    if key not in _rdb_storages:
        same_url = next((storage for (u, _, _), storage in _rdb_storages.items() if u == url), None)
        if same_url is not None:  # other heartbeat settings, the same engine: one pool per URL per process
            _rdb_storages[key] = _with_heartbeat(same_url, heartbeat_interval, max_retry)
            return _rdb_storages[key]
        if scheme == "sqlite":
            engine_kwargs: dict[str, object] = {"connect_args": {"timeout": 60}}
        else:
            engine_kwargs = {"pool_pre_ping": True, "pool_size": RDB_POOL_SIZE, "max_overflow": RDB_MAX_OVERFLOW}
        for attempt in range(SCHEMA_RACE_ATTEMPTS):
            try:
                _rdb_storages[key] = _LocalLivenessRDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
                )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
                if attempt + 1 == SCHEMA_RACE_ATTEMPTS or not _lost_schema_race(exc):
                    raise
                log.info("another process was creating the study storage's schema; opening it again")
                time.sleep(SCHEMA_RACE_WAIT_S * (attempt + 1) * (1 + random.random()))
    return _rdb_storages[key]


class _LocalLivenessRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose heartbeat check never calls the trial of a live process of this host stale.

    A heartbeat thread shares its worker's GIL and CPU: a C call that holds the GIL, on a loaded
    machine, silences it past the grace period while the worker trains on (a first trial's
    ONNX export imports held it 6.5 s on a loaded 2-core machine, past the 4 s of
    ``heartbeat_interval_s: 2``). Another worker then failed the trial and trained its retry,
    and the first worker's result was thrown away. Whether a process of this host lives can be
    seen, so the heartbeat decides only for trials of other hosts' workers (or of none).
    Optuna's own check before each trial comes through here too.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        return [i for i in stale if not _alive_here(self.get_trial(i).user_attrs.get(WORKER_ATTR))]

    def record_heartbeat(self, trial_id: int) -> None:
        """Optuna's heartbeat, which a lost database connection does not end.

        Optuna's heartbeat thread calls this with no exception handling of its own: one failed
        heartbeat (a database restarting, a network blip) killed the thread with a traceback,
        and the worker trained on unheard, so a worker on another host failed the live trial as
        stale and trained it again. A failed heartbeat is logged and the next one tried at the
        next interval; a fault that lasts is the main thread's to report, at its next write.
        """
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            log.warning("could not record the heartbeat of trial id %d (%s); trying again", trial_id, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    """The exception's first line, with its cause's (Optuna's StorageInternalError says little itself), masked."""
    text = " ".join(str(e).strip().splitlines()[0] for e in (exc, exc.__cause__) if e is not None and str(e).strip())
    return mask_url(f"{type(exc).__name__}: {text}")


SCHEMA_RACE_ATTEMPTS = 5
SCHEMA_RACE_WAIT_S = 0.2  # times the attempt, with jitter so the losers do not collide again


def _lost_schema_race(exc: Exception) -> bool:
    """Whether opening a new RDB storage failed only because another process created its schema at the same time.

    Optuna's ``RDBStorage`` creates missing tables and then inserts the schema version row;
    two workers opening a fresh database together can both try, and the loser gets a
    duplicate-key error on ``alembic_version`` (or "table ... already exists"). Opening it
    again then finds the finished schema.
    """
    text = str(exc)
    return "alembic_version" in text or "already exists" in text or "duplicate key" in text.lower()


def _with_heartbeat(storage: optuna.storages.RDBStorage, interval: int, max_retry: int) -> optuna.storages.RDBStorage:
    """``storage`` (its engine, pool and sessions shared) with other heartbeat settings."""
    other = object.__new__(type(storage))  # not copy.copy: Optuna's __setstate__ builds a new engine
    other.__dict__.update(storage.__dict__)
    other.heartbeat_interval, other.grace_period = interval, 2 * interval
    other.heartbeat_stale_trial_callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
    other.failed_trial_callback = other.heartbeat_stale_trial_callback
    return other


@atexit.register
def dispose_storages() -> None:
    """Close every pooled database connection this process opened (also run at exit)."""
    for storage in _rdb_storages.values():
        storage.engine.dispose()  # shared engines: disposing twice is harmless
    _rdb_storages.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_pid(worker: str) -> int | None:
    """The pid of a ``host:pid`` worker of this host; ``None`` for another host's (its liveness is unknown)."""
    host, _, pid = worker.rpartition(":")
    return int(pid) if host == socket.gethostname() and pid.isdigit() else None


def _alive_here(worker: object) -> bool:
    """Whether ``worker`` (a ``host:pid`` id, or None) is a running process of this host."""
    pid = _local_pid(str(worker)) if worker else None
    return pid is not None and (pid == os.getpid() or _pid_alive(pid))


def fail_abandoned_trials(study: optuna.Study, *, max_retry: int = 1) -> list[FrozenTrial]:
    """Fail and re-enqueue RUNNING trials whose worker is gone: started on this host by a process
    that no longer exists, or never stamped by any worker (see :func:`_orphaned`).

    This is how journal storage (no heartbeats) recovers from a killed worker; on RDB storage
    it makes recovery immediate instead of waiting for the heartbeat grace period.
    """
    failed = []
    trials = study.get_trials(deepcopy=False)
    for trial in (t for t in trials if t.state == TrialState.RUNNING):
        owner = trial.user_attrs.get(WORKER_ATTR)
        if owner is None:
            if not _orphaned(trial):
                continue
            owner = "a worker that died before stamping it"
        elif _local_pid(str(owner)) is None or _alive_here(owner) or _unstamped_retry(trial, trials):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another worker got there first
            continue
        log.warning("trial %d was left RUNNING by %s; marked FAIL and re-enqueued", trial.number, owner)
        frozen = study.get_trials(deepcopy=False)[trial.number]
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, frozen)
        failed.append(frozen)
    return failed


ORPHAN_GRACE_S = 60.0
"""A RUNNING trial that no worker has stamped this long after it started belongs to none."""


def _orphaned(trial: FrozenTrial) -> bool:
    """A trial created by ``study.ask()`` whose worker died before writing ``WORKER_ATTR``.

    Every worker stamps a trial as its first step, milliseconds after asking for it; a worker
    killed in between leaves a RUNNING trial that names no owner and, on RDB storage, has no
    heartbeat either, so neither recovery would ever fail it and the study would wait for it
    forever (seen in the SIGTERM chaos run). It is failed on any host once it is this old.
    """
    started = trial.datetime_start
    return started is not None and (datetime.now() - started).total_seconds() > ORPHAN_GRACE_S


def _unstamped_retry(trial: FrozenTrial, trials: list[FrozenTrial], grace_s: float = 60.0) -> bool:
    """A retry just taken by a worker that has not yet written its own ``WORKER_ATTR``.

    A retry is queued with the failed trial's user attributes, the dead worker's id among
    them, until the worker running it overwrites it (its first step); failing it in that
    window would fail a live worker's trial (which then crashes on ``Cannot tell a FAIL trial``).
    """
    history = trial.system_attrs.get(RETRY_HISTORY_ATTR) or [None]
    previous = history[-1]  # the trial this one retries (``failed_trial`` is the first of the line)
    if not isinstance(previous, int) or trial.datetime_start is None or not 0 <= previous < len(trials):
        return False
    inherited = trials[previous].user_attrs.get(WORKER_ATTR) == trial.user_attrs.get(WORKER_ATTR)
    return inherited and (datetime.now() - trial.datetime_start).total_seconds() < grace_s


def check_local_store(url: str, what: str) -> None:
    """Refuse a local store (journal file, ``sqlite:///`` database) that does not exist: opening it would create it.

    Raises:
        FileNotFoundError: No such file; the message names ``what`` and the path.
    """
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
    elif "://" not in url:
        path = Path(url.removeprefix("journal:"))
    else:
        return
    if not path.is_file():
        raise FileNotFoundError(
            f"no {what} at {path}: check the path (or --storage / --tracking-uri), or run a search first"
        )


def load_study(study_name: str, storage_url: str, *, read_only: bool = False) -> optuna.Study:
    """Load an existing study; a missing one is a ``StorageError`` naming the studies that exist.

    Nothing is created by looking: a missing journal file or SQLite database is a ``FileNotFoundError``.
    With ``read_only``, a journal file is not repaired either (see :func:`open_storage`).
    """
    check_local_store(storage_url, "study storage")
    storage = open_storage(storage_url, read_only=read_only)
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        raise StorageError(
            f"no study named {study_name!r} in {mask_url(storage_url)}; "
            f"studies there: {', '.join(names) if names else 'none'}"
        ) from None
