#!/usr/bin/env python
"""Chaos: W workers on one study while a killer loop signals a random worker every few seconds.

One study (tiny space, synthetic data, 1 epoch) on PostgreSQL (or a journal file) with a
real ``mlflow server`` (SQLite backend) for tracking. W ``blocknas search`` workers run it;
every few seconds a random worker gets SIGKILL (or SIGTERM) and a replacement starts. At
the end it checks what a user relies on:

- exactly N finished trials, none RUNNING, and no architecture trained twice under one
  training key (a retry or a second worker takes the recorded result: ``duplicate_of``);
- one MLflow parent, exactly one child per finished trial with identical metrics, no
  child left RUNNING (``blocknas doctor``'s :func:`diagnose`);
- with SIGTERM, every interrupted trial is FAIL with reason ``interrupted``;
- the peak of PostgreSQL connections (pg_stat_activity, sampled) against the bound
  ``RDB_CONNECTIONS_PER_WORKER × W`` (the MLflow server's backend is SQLite: none);
- trials per hour against one worker without kills.

Outages can be added to the kills, each in its own thread on its own schedule:

- ``--tracking-outages K``: K times, the MLflow server is unavailable for a while: ``restart``
  (its process group SIGKILLed, then started again after S seconds on the same port and store,
  so it refuses connections for S plus its start-up time) or ``stop`` (SIGSTOPped for S seconds,
  then SIGCONTinued: connections are accepted and requests hang). ``--outage-s`` lists the
  lengths S and ``--outage-kinds`` the kinds, each cycled. The workers' tracking retry window
  (``BLOCKNAS_TRACKING_RETRY_S``) is ``--tracking-retry-s``: a restart outage longer than it
  fails the trial it cut short as retryable and its worker exits 2; a shorter one is ridden out.
- ``--storage-outages K`` (PostgreSQL only): the workers reach the database through a
  :class:`~blocknas.search.tracking.fault_proxy.CuttableProxy`, which is cut K times for
  ``--storage-outage-s`` seconds: every connection closed, new ones refused.

A worker that exits 2 on an outage (one paragraph, no traceback) is replaced like a killed one;
the exits are counted by the cause their error line names, and any other exit status, or a
traceback in any worker's output, is a problem.

    python benchmarks/chaos.py [--workers 6] [--trials 40] [--kills 15] [--storage postgres|journal]
                               [--signal KILL|TERM] [--kill-interval-s 2,5]
                               [--postgres-url postgresql://postgres@127.0.0.1:5432/test]
                               [--tracking-outages 3] [--outage-s 4,30] [--outage-kinds restart,restart,stop]
                               [--tracking-retry-s 20] [--storage-outages 2] [--storage-outage-s 5]

Appends its results to benchmarks/results/chaos.md (one section per run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from blocknas.search.study import (
    DUPLICATE_OF_ATTR,
    FAIL_REASON_ATTR,
    INTERRUPTED,
    TRAINING_KEY_ATTR,
    retried_trials,
    trial_counts,
)
from blocknas.search.tracking import RDB_CONNECTIONS_PER_WORKER, StudyTracker, diagnose, open_storage
from blocknas.search.tracking.dashboard import free_port, mlflow_server_command, mlflow_server_env, stop, wait_until_up
from blocknas.search.tracking.fault_proxy import CuttableProxy
from blocknas.search.tracking.runs import RETRY_WINDOW_ENV

RESULTS = Path(__file__).parent / "results" / "chaos.md"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

CONFIG: dict[str, Any] = {
    "space": "tiny",
    "data": {"name": "synthetic", "num_samples": 128},
    "train": {"epochs": 1, "batch_size": 64},
    "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
    "sampler": "random",
    "heartbeat_interval_s": 2,
}


@dataclass
class Outage:
    """One outage: what was made unavailable, how, for how long it was planned and how long it lasted."""

    kind: str  # "restart" or "stop" (the MLflow server), "cut" (the database proxy)
    planned_s: float
    at_s: float = 0.0  # seconds after the workers started
    lasted_s: float = 0.0  # until the service answered again (a restart adds the server's start-up)

    def __str__(self) -> str:
        lasted = f" (down {self.lasted_s:.0f} s)" if self.kind == "restart" else ""
        return f"{self.kind} {self.planned_s:g} s at {self.at_s:.0f} s{lasted}"


@dataclass
class ChaosResult:
    """What one chaos run saw; ``problems`` lists every failed check."""

    workers: int
    trials: int
    storage: str
    signal: str
    kills: int = 0
    wall_s: float = 0.0
    finished: int = 0
    running: int = 0
    failed: int = 0
    retried: int = 0
    interrupted: int = 0
    duplicates: int = 0
    mlflow_children: int = 0
    peak_connections: int | None = None
    connection_bound: int | None = None
    tracking_outages: list[Outage] = field(default_factory=list)
    storage_outages: list[Outage] = field(default_factory=list)
    retry_window_s: float | None = None
    dropped_connections: int = 0
    exits: Counter[int] = field(default_factory=Counter)
    exit_2_causes: Counter[str] = field(default_factory=Counter)
    fail_reasons: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def trials_per_hour(self) -> float:
        return 3600 * self.finished / self.wall_s if self.wall_s else 0.0


SERVER_STORE = "server.db"  # the server's SQLite store, in its folder


def start_mlflow_server(folder: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``mlflow server`` on ``port`` (default: a free one) on loopback, backed by SQLite in ``folder``;
    returns once it answers.

    Ready means ``/health`` answers, not that the port accepts connections: the server accepts
    them before it can answer, and the first workers then waited on a server still starting.
    """
    port = port or free_port()
    command = mlflow_server_command(f"sqlite:///{folder / SERVER_STORE}", port=port)
    proc = subprocess.Popen(
        [*command, "--artifacts-destination", str(folder / "server-artifacts")],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=mlflow_server_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", proc, timeout_s=120)
    except BaseException:
        stop(proc)
        raise
    return proc, url


class TrackingServer:
    """The run's ``mlflow server``, which an outage crashes and restarts (same port, same store) or pauses."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.proc, self.url = start_mlflow_server(folder)
        self.port = int(self.url.rsplit(":", 1)[1])

    def begin(self, kind: str) -> None:
        if kind == "restart":  # a crash: the whole group at once, nothing shut down cleanly
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        else:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def end(self, kind: str) -> None:
        if kind == "restart":
            self.proc, _ = start_mlflow_server(self.folder, self.port)
        else:
            os.killpg(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
        stop(self.proc)


class StorageCut:
    """The workers' way to PostgreSQL (a :class:`CuttableProxy`), which an outage cuts."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        self.url = url.replace(f"{parts.hostname}:{parts.port or 5432}", f"127.0.0.1:{self.proxy.port}", 1)

    def begin(self, kind: str) -> None:
        self.proxy.cut()

    def end(self, kind: str) -> None:
        self.proxy.restore()


class OutageLoop(threading.Thread):
    """Makes a service unavailable ``len(plan)`` times: once ``under_way`` is set (a trial has finished, so
    the workers are past start-up), waits ``first_s`` (then a random gap), begins an outage, ends it after its
    length, and records it in ``done_outages``. Once ``finished`` is set it ends the outage under way at
    once and plans no more."""

    def __init__(
        self,
        target: TrackingServer | StorageCut,
        plan: list[tuple[str, float]],
        *,
        start: float,
        first_s: float,
        gap_s: tuple[float, float],
        rng: random.Random,
        under_way: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.target, self.plan, self.start_time, self.first_s, self.gap_s, self.rng = (
            target, plan, start, first_s, gap_s, rng,
        )  # fmt: skip
        self.finished = threading.Event()
        self.under_way = under_way
        self.done_outages: list[Outage] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.under_way.wait(0.5):
                if self.finished.is_set():
                    return
            wait = self.first_s
            for kind, seconds in self.plan:
                if self.finished.wait(wait):
                    return
                began = time.monotonic()
                self.target.begin(kind)
                self.finished.wait(seconds)
                self.target.end(kind)
                ended = time.monotonic()
                self.done_outages.append(Outage(kind, seconds, began - self.start_time, ended - began))
                wait = self.rng.uniform(*self.gap_s)
        except BaseException as exc:  # reported as a problem of the run
            self.error = exc


class ConnectionSampler(threading.Thread):
    """Samples how many PostgreSQL connections carry ``application_name`` (every worker's ``PGAPPNAME``)."""

    def __init__(self, url: str, app: str, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.app, self.every_s = url, app, every_s
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (self.app,))
                self.peak = max(self.peak, int(row.fetchone()[0]))  # type: ignore[index]
                time.sleep(self.every_s)


class Fleet:
    """The worker processes of one study: start, signal, replace."""

    def __init__(
        self, config: Path, storage: str, tracking_uri: str, app: str, env: dict[str, str] | None = None
    ) -> None:
        self.command = [
            sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress",
            "--storage", storage, "--tracking-uri", tracking_uri, "--parallel", "1",
        ]  # fmt: skip  # one process per worker: the killer's signal reaches the whole worker
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1", "PGAPPNAME": app, **(env or {})}
        self.folder = config.parent
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.exit_codes: Counter[int] = Counter()
        self.logs: dict[int, Path] = {}  # pid → its output
        self.crashed: list[Path] = []  # logs of workers that exited with a status no signal explains
        self.exit_2_causes: Counter[str] = Counter()  # workers that exited 2 (a fault, said in one paragraph)
        self.exit_2_ok = False  # whether an outage can explain an exit 2

    def start(self) -> None:
        path = self.folder / f"worker-{self.started:03d}.log"
        with path.open("wb") as log:
            proc = subprocess.Popen(self.command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.logs[proc.pid] = path
        self.started += 1
        self.procs.append(proc)

    def reap(self) -> None:
        for proc in [p for p in self.procs if p.poll() is not None]:
            self.exit_codes[proc.returncode] += 1
            expected = (0, 130, -signal.SIGKILL, -signal.SIGTERM) + ((2,) if self.exit_2_ok else ())
            if proc.returncode == 2:
                cause = exit_2_cause(self.logs[proc.pid])
                self.exit_2_causes[cause] += 1
                if cause == "other":
                    expected = ()
            if proc.returncode not in expected:
                self.crashed.append(self.logs[proc.pid])
            self.procs.remove(proc)

    def signal_one(self, sig: signal.Signals, rng: random.Random) -> None:
        proc = rng.choice(self.procs)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.reap()


EXIT_2_CAUSES = {
    "lost the connection to": "database lost",
    "did not answer for": "tracking outage past the retry window",
    "tracking server": "tracking server not reachable",
    "storage": "database not reachable",
}
"""Words of a worker's error line → the cause an exit 2 is counted under (the first that matches)."""


def exit_2_cause(log: Path) -> str:
    """What a worker's ``blocknas search: error:`` line blames, as a key of :data:`EXIT_2_CAUSES`'s values,
    else ``other`` (an exit 2 no outage explains)."""
    lines = log.read_text(errors="replace").splitlines()
    error = next((line for line in reversed(lines) if line.startswith("blocknas search: error:")), "")
    return next((cause for words, cause in EXIT_2_CAUSES.items() if words in error), "other")


def _write_config(folder: Path, name: str, trials: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **CONFIG, "n_trials": trials}))
    return path


def run_chaos(
    *,
    workers: int,
    trials: int,
    kills: int,
    storage_kind: str = "postgres",
    sig: signal.Signals = signal.SIGKILL,
    interval_s: tuple[float, float] = (2.0, 5.0),
    postgres_url: str = POSTGRES_URL,
    folder: Path | None = None,
    timeout_s: float = 900,
    seed: int = 0,
    tracking_uri: str | None = None,
    tracking_outages: int = 0,
    outage_s: tuple[float, ...] = (4.0, 30.0),
    outage_kinds: tuple[str, ...] = ("restart", "restart", "stop"),
    tracking_retry_s: float = 20.0,
    storage_outages: int = 0,
    storage_outage_s: tuple[float, ...] = (5.0,),
    outage_gap_s: tuple[float, float] = (5.0, 10.0),
) -> ChaosResult:
    """Run one study under a killer loop (and outages) and check it; see the module docstring.

    Args:
        workers: Workers running at any time (W).
        trials: The study's ``n_trials`` (N).
        kills: Signals to send (each to a random worker, which is then replaced).
        storage_kind: ``postgres`` (RDB storage with heartbeats) or ``journal`` (a file, one machine).
        sig: SIGKILL or SIGTERM.
        interval_s: Range of seconds between two signals.
        postgres_url: The database for ``postgres``.
        folder: Working folder (default: a new temporary one).
        timeout_s: Give up after this long.
        seed: Seed of the killer's and the outages' choices.
        tracking_uri: An MLflow server to use (default: one started for this run, SQLite-backed; only that
            one can have outages).
        tracking_outages: How many times the MLflow server becomes unavailable.
        outage_s: Their lengths in seconds, cycled.
        outage_kinds: Their kinds, cycled: ``restart`` (crashed, started again after the length) or ``stop``
            (SIGSTOPped for the length).
        tracking_retry_s: The workers' ``BLOCKNAS_TRACKING_RETRY_S`` (only set with tracking outages).
        storage_outages: How many times the workers' way to PostgreSQL is cut.
        storage_outage_s: Their lengths in seconds, cycled.
        outage_gap_s: Range of seconds between two outages of one kind. The first tracking outage begins 2 s
            after the first trial finished, the first storage outage ``outage_gap_s[0]`` s after it.

    Returns:
        The observations and every failed check.
    """
    if tracking_outages and tracking_uri is not None:
        raise ValueError("tracking outages need the MLflow server this run starts (no tracking_uri)")
    if storage_outages and storage_kind != "postgres":
        raise ValueError("storage outages cut a PostgreSQL connection: use storage_kind='postgres'")
    folder = folder or Path(tempfile.mkdtemp(prefix="chaos-"))
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    storage = postgres_url if storage_kind == "postgres" else str(folder / "runs" / "optuna.journal")
    result = ChaosResult(workers, trials, storage_kind, sig.name)
    server = None
    if tracking_uri is None:
        server = TrackingServer(folder)
        tracking_uri = server.url
    cut = StorageCut(postgres_url) if storage_outages else None
    env = {}
    if tracking_outages:
        env[RETRY_WINDOW_ENV] = f"{tracking_retry_s:g}"
        result.retry_window_s = tracking_retry_s
    sampler = ConnectionSampler(postgres_url, name) if storage_kind == "postgres" else None
    rng = random.Random(seed)
    fleet = Fleet(_write_config(folder, name, trials), cut.url if cut else storage, tracking_uri, name, env)
    fleet.exit_2_ok = bool(tracking_outages or storage_outages)
    start = time.monotonic()
    loops = []
    under_way = threading.Event()  # a trial has finished: the outages begin
    if server is not None and tracking_outages:
        plan = [(outage_kinds[i % len(outage_kinds)], outage_s[i % len(outage_s)]) for i in range(tracking_outages)]
        loops.append(
            OutageLoop(
                server,
                plan,
                start=start,
                first_s=2,
                gap_s=outage_gap_s,
                rng=random.Random(seed + 1),
                under_way=under_way,
            )
        )
    if cut is not None:
        plan = [("cut", storage_outage_s[i % len(storage_outage_s)]) for i in range(storage_outages)]
        loops.append(
            OutageLoop(
                cut,
                plan,
                start=start,
                first_s=outage_gap_s[0],
                gap_s=outage_gap_s,
                rng=random.Random(seed + 2),
                under_way=under_way,
            )
        )
    try:
        if sampler is not None:
            sampler.start()
        for _ in range(workers):
            fleet.start()
        for loop in loops:
            loop.start()
        next_kill = start + rng.uniform(*interval_s)
        while fleet.procs or _unfinished(name, storage, trials):
            if time.monotonic() - start > timeout_s:
                result.problems.append(f"gave up after {timeout_s:.0f} s")
                break
            fleet.reap()
            if not under_way.is_set() and _finished(name, storage) > 0:
                under_way.set()
            if result.kills < kills and fleet.procs and time.monotonic() >= next_kill:
                fleet.signal_one(sig, rng)
                result.kills += 1
                next_kill = time.monotonic() + rng.uniform(*interval_s)
            while len(fleet.procs) < workers and _unfinished(name, storage, trials):
                fleet.start()
            time.sleep(0.5)
        result.wall_s = time.monotonic() - start
    finally:
        for proc in fleet.procs:
            proc.kill()
        for loop in loops:  # the outage under way ends: the checks read the server
            loop.finished.set()
            loop.join(timeout=180)
        if sampler is not None:
            sampler.done.set()
            sampler.join(timeout=5)
            result.peak_connections = sampler.peak
            result.connection_bound = RDB_CONNECTIONS_PER_WORKER * workers
    for loop in loops:
        done = loop.done_outages
        if isinstance(loop.target, StorageCut):
            result.storage_outages = done
            result.dropped_connections = loop.target.proxy.dropped
            loop.target.proxy.close()
        else:
            result.tracking_outages = done
        if loop.error is not None:
            result.problems.append(f"an outage failed: {type(loop.error).__name__}: {loop.error}")
        if len(done) < len(loop.plan):
            result.problems.append(f"{len(done)} of {len(loop.plan)} outages happened before the study finished")
    try:
        _check(result, name, storage, tracking_uri, sig)
    finally:
        if server is not None:
            server.close()
    if sampler is not None and result.peak_connections > result.connection_bound:  # type: ignore[operator]
        result.problems.append(f"{result.peak_connections} connections, over the bound {result.connection_bound}")
    result.exits = fleet.exit_codes
    result.exit_2_causes = fleet.exit_2_causes
    traced = [log for log in sorted(set(fleet.logs.values())) if "Traceback" in log.read_text(errors="replace")]
    if fleet.crashed:
        unexpected = {code: n for code, n in fleet.exit_codes.items() if code not in (0, -sig, 130, 2)}
        if fleet.exit_2_causes.get("other"):
            unexpected[2] = fleet.exit_2_causes["other"]
        result.problems.append(
            f"workers exited with a status no signal or outage explains {unexpected}; logs in {folder}: "
            + ", ".join(p.name for p in fleet.crashed)
            + "".join(f"\n--- {p.name} (last lines) ---\n{_tail(p)}" for p in fleet.crashed)
        )
    if traced:
        result.problems.append(
            f"a traceback in {', '.join(p.name for p in traced)} (in {folder})"
            + "".join(f"\n--- {p.name} (last lines) ---\n{_tail(p)}" for p in traced)
        )
    return result


def _tail(log: Path, lines: int = 12) -> str:
    """The end of a worker's log, so a failed check shows why the worker exited (CI keeps no files)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _finished(name: str, storage: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:  # not created yet
        return 0
    return trial_counts(study)[0]


def _unfinished(name: str, storage: str, trials: int) -> bool:
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:  # not created yet
        return True
    done, running = trial_counts(study)
    return done < trials or running > 0


def _check(result: ChaosResult, name: str, storage: str, tracking_uri: str, sig: signal.Signals) -> None:
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    result.finished, result.running = trial_counts(study)
    result.failed = sum(t.state == TrialState.FAIL for t in trials)
    result.retried = len(retried_trials(trials))
    result.duplicates = sum(t.user_attrs.get(DUPLICATE_OF_ATTR) is not None for t in trials)
    if result.finished != result.trials or result.running:
        result.problems.append(f"{result.finished} finished and {result.running} running trials, not {result.trials}")
    trained = Counter(
        t.user_attrs[TRAINING_KEY_ATTR]["key"]
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and t.user_attrs.get(DUPLICATE_OF_ATTR) is None
        and TRAINING_KEY_ATTR in t.user_attrs
    )
    twice = [key for key, n in trained.items() if n > 1]
    if twice:
        result.problems.append(f"{len(twice)} architectures trained twice under one training key")
    result.fail_reasons = Counter(
        _reason(t.user_attrs.get(FAIL_REASON_ATTR)) for t in trials if t.state == TrialState.FAIL
    )
    interrupted = [t for t in trials if t.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED]
    result.interrupted = len(interrupted)
    if sig == signal.SIGTERM:
        wrong = [t.number for t in interrupted if t.state != TrialState.FAIL]
        if wrong:
            result.problems.append(f"interrupted trials not FAIL: {wrong}")
        not_retried = [t.number for t in interrupted if t.number not in retried_trials(trials)]
        if not_retried:
            result.problems.append(f"interrupted trials not retried: {not_retried}")
    tracker = StudyTracker(tracking_uri, name)
    diagnosis = diagnose(study, tracker)
    result.mlflow_children = diagnosis.children
    result.problems += [f"doctor: {p}" for p in diagnosis.problems]


def _reason(reason: str | None) -> str:
    """A failed trial's reason, short: ``interrupted``, the exception's name, or ``worker died`` (none recorded:
    a later worker failed it as abandoned)."""
    if reason is None:
        return "worker died"
    return reason.split(":", 1)[0]


def baseline_rate(trials: int, storage_kind: str, postgres_url: str = POSTGRES_URL) -> float:
    """Trials per hour of one worker without kills (same study settings)."""
    return run_chaos(
        workers=1, trials=trials, kills=0, storage_kind=storage_kind, postgres_url=postgres_url
    ).trials_per_hour


def _outages(outages: list[Outage]) -> str:
    return f"{len(outages)}: " + ", ".join(map(str, outages)) if outages else "0"


def _counts(counts: Counter[Any]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.most_common()) or "none"


def _markdown(result: ChaosResult, baseline: float | None) -> str:
    window = "-" if result.retry_window_s is None else f"{result.retry_window_s:g} s"
    exits_2 = sum(result.exit_2_causes.values())
    rows = [
        ("workers × trials", f"{result.workers} × {result.trials}"),
        ("storage / signal", f"{result.storage} / {result.signal}"),
        ("kills", result.kills),
        ("tracking outages (MLflow server)", _outages(result.tracking_outages)),
        ("tracking retry window (BLOCKNAS_TRACKING_RETRY_S)", window),
        ("storage outages (PostgreSQL cut)", _outages(result.storage_outages)),
        ("database connections dropped by the cuts", result.dropped_connections),
        ("wall time", f"{result.wall_s:.0f} s"),
        ("finished / running at end", f"{result.finished} / {result.running}"),
        ("failed (retryable) / retried", f"{result.failed} / {result.retried}"),
        ("failed trials by reason", _counts(result.fail_reasons)),
        ("interrupted (SIGTERM)", result.interrupted),
        ("duplicates (recorded result taken)", result.duplicates),
        ("MLflow children", result.mlflow_children),
        ("worker exits by status", _counts(result.exits)),
        ("worker exits 2 by cause", f"{exits_2}: {_counts(result.exit_2_causes)}" if exits_2 else "0"),
        ("peak PostgreSQL connections / bound", f"{result.peak_connections} / {result.connection_bound}"),
        ("trials per hour", f"{result.trials_per_hour:.0f}"),
        ("one worker, no kills", "-" if baseline is None else f"{baseline:.0f} trials per hour"),
        ("problems", "; ".join(result.problems).replace("\n", "<br>").replace("|", "\\|") or "none"),
    ]
    faults = [
        what
        for what, n in (("tracking outages", result.tracking_outages), ("storage outages", result.storage_outages))
        if n
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"## {stamp}: {result.workers} workers, {result.storage}, {result.signal}"
    lines = [title + "".join(f" + {what}" for what in faults), "", "| | |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def _seconds(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--storage", choices=["postgres", "journal"], default="postgres")
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--kill-interval-s", type=_seconds, default=(2.0, 5.0), help="range between two kills (2,5)")
    parser.add_argument(
        "--baseline-trials", type=int, default=10, help="trials of the one-worker, no-kill run (0: skip)"
    )
    parser.add_argument("--tracking-outages", type=int, default=0, help="times the MLflow server is unavailable")
    parser.add_argument("--outage-s", type=_seconds, default=(4.0, 30.0), help="their lengths, cycled (4,30)")
    parser.add_argument(
        "--outage-kinds",
        type=lambda text: tuple(text.split(",")),
        default=("restart", "restart", "stop"),
        help="their kinds, cycled: restart (crash, start again after the length), stop (SIGSTOP for the length)",
    )
    parser.add_argument("--tracking-retry-s", type=float, default=20.0, help="the workers' BLOCKNAS_TRACKING_RETRY_S")
    parser.add_argument("--storage-outages", type=int, default=0, help="times the workers' PostgreSQL is cut off")
    parser.add_argument("--storage-outage-s", type=_seconds, default=(5.0,), help="their lengths, cycled (5)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if any(kind not in ("restart", "stop") for kind in args.outage_kinds):
        parser.error(f"--outage-kinds: restart or stop, not {','.join(args.outage_kinds)}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the workers and the server
    baseline = baseline_rate(args.baseline_trials, args.storage, args.postgres_url) if args.baseline_trials else None
    result = run_chaos(
        workers=args.workers,
        trials=args.trials,
        kills=args.kills,
        interval_s=(args.kill_interval_s[0], args.kill_interval_s[-1]),
        storage_kind=args.storage,
        sig=signal.Signals[f"SIG{args.signal}"],
        postgres_url=args.postgres_url,
        seed=args.seed,
        tracking_outages=args.tracking_outages,
        outage_s=args.outage_s,
        outage_kinds=args.outage_kinds,
        tracking_retry_s=args.tracking_retry_s,
        storage_outages=args.storage_outages,
        storage_outage_s=args.storage_outage_s,
    )
    text = _markdown(result, baseline)
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    header = "" if RESULTS.exists() else "# Chaos: workers killed at random (`python benchmarks/chaos.py`)\n\n"
    with RESULTS.open("a") as out:
        out.write(header + text + "\n")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
