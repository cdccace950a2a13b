"""Local worker processes on one study: how many and with how many threads (``parallel:``), and starting them
(``make workers N=2``, ``blocknas search`` with ``parallel`` above 1)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from blocknas.blocks import ConfigError
from blocknas.search.tracking import mask_url

__all__ = [
    "MAX_WORKERS",
    "PARALLEL_ENV",
    "ParallelPlan",
    "available_cores",
    "held_until_released",
    "launch_workers",
    "plan_parallel",
    "release_workers",
    "start_workers",
    "stop_workers",
    "threads_per_worker",
    "wait_workers",
]

log = logging.getLogger(__name__)

MAX_WORKERS = 256
"""Most local worker processes one command starts (``blocknas workers -n``, ``parallel:``)."""
HOLD_ENV = "BLOCKNAS_HELD"
"""Set on workers started held (:func:`start_workers`): they wait for a line on stdin before touching the study."""
PARALLEL_ENV = "BLOCKNAS_PARALLEL"
"""Environment variable that ``parallel: auto`` follows when it is set (e.g. 1 on a machine shared with others)."""


def available_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or ``taskset``'s share), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this OS (macOS)
        return os.cpu_count() or 1


def threads_per_worker(n_workers: int, cores: int | None = None) -> int:
    """Threads each worker may use so that ``n_workers × threads <= cores``, but at least 1
    (so more workers than cores do oversubscribe, one thread each)."""
    cores = cores or available_cores()
    return max(1, cores // max(1, n_workers))


@dataclass(frozen=True)
class ParallelPlan:
    """How a search uses the machine: ``workers`` trials at once, each training on ``threads`` threads.

    Attributes:
        workers: Worker processes on the study (1: the search runs in this process alone).
        threads: Training threads per worker (``train.threads``, else ``cores // workers``).
        cores: The cores it was planned for.
        why: How ``workers`` was chosen, for the log.
    """

    workers: int
    threads: int
    cores: int
    why: str

    @property
    def oversubscribed(self) -> bool:
        """Whether ``workers × threads`` exceeds the cores (an explicit ``parallel`` or ``train.threads`` asked so)."""
        return self.workers * self.threads > self.cores


def plan_parallel(
    parallel: int | Literal["auto"],
    *,
    n_trials: int,
    threads: int | None,
    cores: int,
    env: Mapping[str, str] | None = None,
) -> ParallelPlan:
    """Decide how many trials run at once and on how many threads each.

    ``auto`` follows :data:`PARALLEL_ENV` when it is set, else runs as many workers as the cores
    allow with ``threads × workers <= cores`` (``threads``: the config's ``train.threads``, else 1).
    An explicit number is taken as it is. Never more workers than ``n_trials``: the others would idle.

    Args:
        parallel: The ``parallel:`` setting or ``--parallel`` flag.
        n_trials: The study's total trials.
        threads: Training threads per trial from the config (None: not pinned).
        cores: Cores available (:func:`available_cores`).
        env: Environment to read :data:`PARALLEL_ENV` from (default ``os.environ``).
    """
    env = os.environ if env is None else env
    if parallel != "auto":
        workers, why = parallel, f"parallel: {parallel}"
    elif env.get(PARALLEL_ENV):
        workers, why = _parse_parallel(env[PARALLEL_ENV], PARALLEL_ENV), f"auto: ${PARALLEL_ENV}={env[PARALLEL_ENV]}"
    else:
        workers, why = max(1, cores // (threads or 1)), f"auto: {cores} cores, {threads or 1} thread(s) a trial"
    if workers > n_trials:
        workers, why = n_trials, f"{why}, capped by n_trials={n_trials}"
    return ParallelPlan(workers, threads or threads_per_worker(workers, cores), cores, why)


def _parse_parallel(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise ConfigError(f"{text!r} is not a number of workers: give auto, or 1 to {MAX_WORKERS}", path=where)
    return value


def _worker_command(search_args: Sequence[str]) -> list[str]:
    """``blocknas search`` as a worker: one trial at a time (``--parallel 1``), whatever its config says."""
    return [sys.executable, "-m", "blocknas.search.cli", "search", *search_args, "--parallel", "1"]


def start_workers(
    n_workers: int, search_args: Sequence[str], *, threads: int, held: bool = False
) -> list[subprocess.Popen[bytes]]:
    """Start ``blocknas search <search_args>`` in ``n_workers`` processes of ``threads`` threads each.

    The first shows its progress bar unless ``search_args`` says ``--no-progress``; the others never do.
    ``held`` workers load their libraries, then wait for :func:`release_workers` before they touch the
    study (or exit quietly, if they are stopped first): their start-up overlaps the caller's set-up.
    """
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "BLOCKNAS_THREADS": str(threads),
    }
    if held:
        env[HOLD_ENV] = "stdin"
    command = _worker_command(search_args)
    log.info("starting %d workers with %d thread(s) each: %s", n_workers, threads, mask_url(" ".join(command)))
    quiet = [] if "--no-progress" in command else ["--no-progress"]
    stdin = subprocess.PIPE if held else None
    return [subprocess.Popen(command + (quiet if i else []), env=env, stdin=stdin) for i in range(n_workers)]


def held_until_released() -> bool:
    """In a worker started ``held``: wait until it is released; False if it was stopped instead. Else True."""
    if os.environ.get(HOLD_ENV) != "stdin":
        return True
    return sys.stdin.readline().strip() == "go"


def release_workers(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Let held workers (:func:`start_workers`) go on to the study."""
    for p in procs:
        if p.stdin is not None and not p.stdin.closed:
            try:
                p.stdin.write(b"go\n")
                p.stdin.close()
            except BrokenPipeError:  # it died meanwhile: its exit code tells
                pass


def wait_workers(procs: Sequence[subprocess.Popen[bytes]]) -> int:
    """Wait for every worker; the worst exit code (a failure before a success). Ctrl-C stops them all."""
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        codes = stop_workers(procs)
    return max(codes, key=lambda c: (c != 0, abs(c)), default=0)


def stop_workers(procs: Sequence[subprocess.Popen[bytes]]) -> list[int]:
    """Stop every worker and wait; their exit codes.

    A worker still held exits quietly when its stdin closes; one at work gets SIGTERM (it ends its
    trial as interrupted).
    """
    for p in procs:
        if p.stdin is not None and not p.stdin.closed:
            p.stdin.close()
        elif p.poll() is None:
            p.terminate()
    return [p.wait() for p in procs]


def launch_workers(n_workers: int, search_args: Sequence[str], *, cores: int | None = None) -> int:
    """Run ``blocknas search <search_args>`` in ``n_workers`` processes; returns the worst exit code.

    Every worker is the same command; the study and its MLflow parent run are created by
    whichever starts first. Each gets ``OMP_NUM_THREADS``/``BLOCKNAS_THREADS`` so the
    machine is not oversubscribed.
    """
    return wait_workers(start_workers(n_workers, search_args, threads=threads_per_worker(n_workers, cores)))
