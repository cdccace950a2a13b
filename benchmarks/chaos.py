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

    python benchmarks/chaos.py [--workers 6] [--trials 40] [--kills 15] [--storage postgres|journal]
                               [--signal KILL|TERM] [--postgres-url postgresql://postgres@127.0.0.1:5432/test]

Appends its results to benchmarks/results/chaos.md (one section per run).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
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
    problems: list[str] = field(default_factory=list)

    @property
    def trials_per_hour(self) -> float:
        return 3600 * self.finished / self.wall_s if self.wall_s else 0.0


SERVER_STORE = "server.db"  # the server's SQLite store, in its folder


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``mlflow server`` on a free loopback port, backed by SQLite in ``folder``; returns once it answers.

    Ready means ``/health`` answers, not that the port accepts connections: the server accepts
    them before it can answer, and the first workers then waited on a server still starting.
    """
    port = free_port()
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

    def __init__(self, config: Path, storage: str, tracking_uri: str, app: str) -> None:
        self.command = [
            sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress",
            "--storage", storage, "--tracking-uri", tracking_uri,
        ]  # fmt: skip
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1", "PGAPPNAME": app}
        self.folder = config.parent
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0
        self.exit_codes: Counter[int] = Counter()
        self.logs: dict[int, Path] = {}  # pid → its output
        self.crashed: list[Path] = []  # logs of workers that exited with a status no signal explains

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
            if proc.returncode not in (0, 130, -signal.SIGKILL, -signal.SIGTERM):
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
) -> ChaosResult:
    """Run one study under a killer loop and check it; see the module docstring.

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
        seed: Seed of the killer's choices.
        tracking_uri: An MLflow server to use (default: one started for this run, SQLite-backed).

    Returns:
        The observations and every failed check.
    """
    folder = folder or Path(tempfile.mkdtemp(prefix="chaos-"))
    name = f"chaos-{uuid.uuid4().hex[:8]}"
    storage = postgres_url if storage_kind == "postgres" else str(folder / "runs" / "optuna.journal")
    result = ChaosResult(workers, trials, storage_kind, sig.name)
    server = None
    if tracking_uri is None:
        server, tracking_uri = start_mlflow_server(folder)
    sampler = ConnectionSampler(postgres_url, name) if storage_kind == "postgres" else None
    rng = random.Random(seed)
    fleet = Fleet(_write_config(folder, name, trials), storage, tracking_uri, name)
    start = time.monotonic()
    try:
        if sampler is not None:
            sampler.start()
        for _ in range(workers):
            fleet.start()
        next_kill = start + rng.uniform(*interval_s)
        while fleet.procs or _unfinished(name, storage, trials):
            if time.monotonic() - start > timeout_s:
                result.problems.append(f"gave up after {timeout_s:.0f} s")
                break
            fleet.reap()
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
        if sampler is not None:
            sampler.done.set()
            sampler.join(timeout=5)
            result.peak_connections = sampler.peak
            result.connection_bound = RDB_CONNECTIONS_PER_WORKER * workers
    try:
        _check(result, name, storage, tracking_uri, sig)
    finally:
        if server is not None:
            stop(server)
    if sampler is not None and result.peak_connections > result.connection_bound:  # type: ignore[operator]
        result.problems.append(f"{result.peak_connections} connections, over the bound {result.connection_bound}")
    unexpected = {code: n for code, n in fleet.exit_codes.items() if code not in (0, -sig, 130)}
    if unexpected:
        logs = ", ".join(p.name for p in fleet.crashed)
        tails = "".join(f"\n--- {p.name} (last lines) ---\n{_tail(p)}" for p in fleet.crashed)
        result.problems.append(f"workers exited with unexpected status {unexpected}; logs in {folder}: {logs}{tails}")
    return result


def _tail(log: Path, lines: int = 12) -> str:
    """The end of a worker's log, so a failed check shows why the worker exited (CI keeps no files)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


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


def baseline_rate(trials: int, storage_kind: str, postgres_url: str = POSTGRES_URL) -> float:
    """Trials per hour of one worker without kills (same study settings)."""
    return run_chaos(
        workers=1, trials=trials, kills=0, storage_kind=storage_kind, postgres_url=postgres_url
    ).trials_per_hour


def _markdown(result: ChaosResult, baseline: float | None) -> str:
    rows = [
        ("workers × trials", f"{result.workers} × {result.trials}"),
        ("storage / signal", f"{result.storage} / {result.signal}"),
        ("kills", result.kills),
        ("wall time", f"{result.wall_s:.0f} s"),
        ("finished / running at end", f"{result.finished} / {result.running}"),
        ("failed (by the signals) / retried", f"{result.failed} / {result.retried}"),
        ("interrupted (SIGTERM)", result.interrupted),
        ("duplicates (recorded result taken)", result.duplicates),
        ("MLflow children", result.mlflow_children),
        ("peak PostgreSQL connections / bound", f"{result.peak_connections} / {result.connection_bound}"),
        ("trials per hour", f"{result.trials_per_hour:.0f}"),
        ("one worker, no kills", "-" if baseline is None else f"{baseline:.0f} trials per hour"),
        ("problems", "; ".join(result.problems) or "none"),
    ]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"## {stamp}: {result.workers} workers, {result.storage}, {result.signal}", "", "| | |", "|---|---|"]
    return "\n".join(lines + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--storage", choices=["postgres", "journal"], default="postgres")
    parser.add_argument("--signal", choices=["KILL", "TERM"], default="KILL")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument(
        "--baseline-trials", type=int, default=10, help="trials of the one-worker, no-kill run (0: skip)"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the workers and the server
    baseline = baseline_rate(args.baseline_trials, args.storage, args.postgres_url) if args.baseline_trials else None
    result = run_chaos(
        workers=args.workers,
        trials=args.trials,
        kills=args.kills,
        storage_kind=args.storage,
        sig=signal.Signals[f"SIG{args.signal}"],
        postgres_url=args.postgres_url,
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
