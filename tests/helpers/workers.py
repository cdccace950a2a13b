"""``blocknas search`` worker processes and the study they share: start, wait, read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from blocknas.search.tracking import open_storage

TINY = {
    "space": "tiny",
    "data": {"name": "digits"},
    "train": {"epochs": 1, "batch_size": 128},
    "latency": {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},
    "sampler": "random",
    "heartbeat_interval_s": 2,
}


def write_config(folder: Path, name: str, **overrides: object) -> Path:
    """Write ``<folder>/<name>.yaml``: a study on the tiny space (:data:`TINY`) with ``overrides``."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **TINY, **overrides}))
    return path


def worker(config: Path, *args: str, cwd: Path) -> subprocess.Popen:
    """Start one ``blocknas search`` worker process (one thread, output captured as text)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_default_sigint,
    )  # fmt: skip


def _default_sigint() -> None:
    """Give the worker a default SIGINT even when this test runs as a background job (which
    inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a worker; it must exit 0. Its output."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for(predicate, timeout: float = 180, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` every 0.2 s; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def states(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's trials as stored now; none while the study does not exist yet."""
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()
    except KeyError:
        return []
