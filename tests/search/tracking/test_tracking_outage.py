"""Idempotent tracking writes (issue 29): a run-create whose answer is lost makes one run, not two, and a
tracking outage longer than the retry window fails the trial as retryable, never as a counted failure.

Real ``blocknas search`` processes talk to a real ``mlflow server`` through :class:`FaultyProxy`, a TCP
proxy on loopback that reads enough HTTP to recognise a request: it can forward a run-create and drop
its answer (the server made the run; the client never hears of it), and refuse every connection for a while.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import TrialState

from blocknas.search.study import load_study_config, retried_trials, trial_counts
from blocknas.search.tracking import open_storage
from blocknas.search.tracking.names import STUDY_TAG, TRIAL_NUMBER_TAG, tag_equals
from tests.conftest import quick_study

CREATE_PATH = "/api/2.0/mlflow/runs/create"


def _read_request(conn: socket.socket) -> bytes | None:
    """One whole HTTP request (head and ``Content-Length`` body) from ``conn``, or None at its end."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return head + b"\r\n\r\n" + body


def _closing(request: bytes) -> bytes:
    """``request`` asking the server to close the connection after answering (so its answer ends at EOF)."""
    head, _, body = request.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body


class FaultyProxy:
    """A loopback TCP proxy to an HTTP server that can lose answers and refuse connections.

    Each client connection carries one request (forwarded with ``Connection: close``, the answer relayed
    until the server closes). ``drop_first_creates``: the first answer to each distinct run-create request
    (same bytes = the same create, retried) is dropped after the server has handled it. ``outage_s``: an outage of that many
    seconds, during which every connection is reset at once, starts at the first child run-create
    (``outage_at="create"``) or at the first request after it (``"write"``: a trial is under way).
    """

    def __init__(
        self, upstream: str, *, drop_first_creates: bool = False, outage_s: float = 0.0, outage_at: str = "write"
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.drop_first_creates, self.outage_s, self.outage_at = drop_first_creates, outage_s, outage_at
        self.seen_creates: set[bytes] = set()
        self.dropped = 0
        self.refused = 0
        self.child_created = False
        self.outage_until: float | None = None
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def outage_over(self) -> bool:
        return self.outage_until is not None and time.monotonic() > self.outage_until

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _refusing(self, request: bytes) -> bool:
        with self.lock:
            now = time.monotonic()
            child_create = request.startswith(b"POST " + CREATE_PATH.encode()) and MLFLOW_PARENT_RUN_ID.encode() in (
                request
            )
            starts = self.child_created if self.outage_at == "write" else child_create
            if self.outage_s and starts and self.outage_until is None:
                self.outage_until = now + self.outage_s
            if self.outage_until is not None and now <= self.outage_until:
                self.refused += 1
                return True
            self.child_created = self.child_created or child_create
            return False

    def _dropping(self, request: bytes) -> bool:
        if not (self.drop_first_creates and request.startswith(b"POST " + CREATE_PATH.encode())):
            return False
        body = request.partition(b"\r\n\r\n")[2]
        with self.lock:
            if body in self.seen_creates:
                return False
            self.seen_creates.add(body)
            self.dropped += 1
            return True

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            if self._refusing(request):  # a reset, as from a server that is down
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            dropping = self._dropping(request)
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(_closing(request))
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            if not dropping:  # dropped: the server handled it, the client hears nothing
                conn.sendall(answer)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy_to() -> Iterator[list[FaultyProxy]]:
    proxies: list[FaultyProxy] = []
    yield proxies
    for proxy in proxies:
        proxy.close()


def blocknas(folder: Path, *args: str, **env: str) -> tuple[int, str]:
    """A real ``blocknas`` process in ``folder``: exit status and output."""
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1", **env}
    done = subprocess.run(
        [sys.executable, "-m", "blocknas.search.cli", *args], cwd=folder, env=environ,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )  # fmt: skip
    return done.returncode, done.stdout


def write_config(folder: Path, name: str, tracking_uri: str, n_trials: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(quick_study(name, n_trials=n_trials, tracking_uri=tracking_uri)))
    return path


def assert_exactly_once(folder: Path, config: Path, server: str, n_trials: int) -> None:
    """``n_trials`` trained, none twice, a failed trial only as a retried one; one child run per trial that
    has one, none RUNNING; ``blocknas doctor`` says consistent."""
    name = load_study_config(config).name
    study = optuna.load_study(study_name=name, storage=open_storage(str(folder / "runs" / "optuna.journal")))
    trials = study.get_trials()
    assert trial_counts(study) == (n_trials, 0)
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == n_trials, "none trained twice"
    retried = retried_trials(trials)
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL), "a cut-short trial is retried"
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], tag_equals(STUDY_TAG, name))
    children = [r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags]
    per_trial = [r.data.tags[TRIAL_NUMBER_TAG] for r in children]
    assert sorted(per_trial) == sorted(set(per_trial)), f"one child run per trial: {per_trial}"
    assert len(runs) - len(children) == 1, "one parent run"
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"], "no run left RUNNING"
    code, out = blocknas(folder, "doctor", "--config", str(config), "--tracking-uri", server)
    assert code == 0 and out.strip().endswith("consistent"), out[-3000:]


def test_a_lost_run_create_answer_makes_one_run_not_two(
    tmp_path: Path, mlflow_server: str, proxy_to: list[FaultyProxy]
) -> None:
    proxy = FaultyProxy(mlflow_server, drop_first_creates=True)
    proxy_to.append(proxy)
    config = write_config(tmp_path, f"lost-create-{tmp_path.name}", proxy.url, n_trials=2)
    code, out = blocknas(tmp_path, "search", "--config", str(config), "--no-progress")
    assert code == 0, out[-3000:]
    assert proxy.dropped >= 3, "the parent's and each trial's create lost its first answer"
    assert_exactly_once(tmp_path, config, mlflow_server, n_trials=2)


@pytest.mark.parametrize("outage_at", ["write", "create"])
def test_an_outage_past_the_retry_window_retries_the_trial_after_it(
    tmp_path: Path, mlflow_server: str, proxy_to: list[FaultyProxy], outage_at: str
) -> None:
    """MLflow's own retries made short (as if the outage outlasted its minutes of retries), blocknas's window 2 s,
    the outage 12 s from the first trial's run-create or its first write after it: that trial is cut short,
    retried by the rerun after the outage, and the study ends with every trial trained once."""
    proxy = FaultyProxy(mlflow_server, outage_s=12.0, outage_at=outage_at)
    proxy_to.append(proxy)
    config = write_config(tmp_path, f"outage-{tmp_path.name}", proxy.url, n_trials=2)
    short = {
        "BLOCKNAS_TRACKING_RETRY_S": "2",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    code, out = blocknas(tmp_path, "search", "--config", str(config), "--no-progress", **short)
    assert proxy.refused, "the outage happened during the first run"
    assert code == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("blocknas search: error:")]
    assert error and "tracking server" in error[0] and "retry" in error[0], out[-3000:]
    while not proxy.outage_over():
        time.sleep(0.5)
    code, out = blocknas(tmp_path, "search", "--config", str(config), "--no-progress", **short)
    assert code == 0, out[-3000:]
    assert_exactly_once(tmp_path, config, mlflow_server, n_trials=2)
