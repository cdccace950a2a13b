"""Dashboards: ``mlflow server`` over the runs store, ``optuna-dashboard`` over the study storage.

Both are the projects' own servers; this module only starts them with the project's
stores, on 127.0.0.1 unless told another host, and says where to point a browser.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from types import FrameType
from wsgiref.simple_server import WSGIServer, make_server

from blocknas.blocks import ConfigError

from .masking import mask_url
from .storage import open_storage

__all__ = [
    "DEFAULT_HOST",
    "DashboardError",
    "check_host",
    "free_port",
    "launch_mlflow_server",
    "mlflow_server_command",
    "mlflow_server_env",
    "run_optuna_dashboard",
    "runs_page_url",
    "start_mlflow_server",
    "stop",
    "wait_until_up",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


class DashboardError(RuntimeError):
    """A dashboard server did not start."""


def check_host(host: str) -> str:
    """``host`` if a server can listen on it here (an IPv4 address or name of this machine).

    Raises:
        ConfigError: It does not resolve, or is not an address of this machine, so the
            server would die at start with a traceback instead.
    """
    try:
        if not host.strip():
            raise OSError("empty address")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host!r} ({exc.strerror or exc}); give an IPv4 address or name of this machine: "
            "127.0.0.1 (this machine only, the default) or 0.0.0.0 (every network interface)",
            path="--host",
        ) from None
    return host


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mlflow_server_command(
    tracking_uri: str, *, host: str = DEFAULT_HOST, port: int = 5000, workers: int = 1
) -> list[str]:
    """The ``mlflow server`` command line for a local store (the venv's own mlflow)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def mlflow_server_env() -> dict[str, str]:
    """This process's environment for ``mlflow server``, without MLflow 3's job runner unless asked for.

    MLflow 3 starts seven ``huey`` job consumers beside every server (GenAI jobs: scorers, trace
    roll-ups) that blocknas never submits; on a small machine they cost ~250 MB each and CPU at
    start. ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` set in the environment is kept as it is.
    """
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def runs_page_url(ui_base: str, tracking_uri: str, experiment: str) -> str | None:
    """The MLflow UI page of an experiment's runs table, or ``None`` if there is no such experiment.

    ``workflowType=machine_learning`` opens the runs table rather than MLflow 3's GenAI overview.
    """
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri).get_experiment_by_name(experiment)
    if found is None:
        return None
    return f"{ui_base.rstrip('/')}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


def wait_until_up(url: str, process: subprocess.Popen[bytes] | None = None, *, timeout_s: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DashboardError(f"the server exited with status {process.returncode} before answering at {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise DashboardError(f"no answer from {url} within {timeout_s:.0f} s")


def launch_mlflow_server(
    tracking_uri: str, *, host: str = DEFAULT_HOST, port: int = 5000
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``mlflow server`` on ``tracking_uri`` without waiting for it; returns ``(process, url)``.

    The caller stops it with ``stop(process)``. Its output goes to this process's stderr.
    """
    if tracking_uri.startswith(("http://", "https://")):
        raise DashboardError(f"{mask_url(tracking_uri)} is already a tracking server: open it in a browser")
    command = mlflow_server_command(tracking_uri, host=host, port=port)
    log.debug("starting %s", mask_url(" ".join(command)))
    process = subprocess.Popen(
        command, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True, env=mlflow_server_env()
    )
    return process, f"http://{host}:{port}"


def start_mlflow_server(
    tracking_uri: str, *, host: str = DEFAULT_HOST, port: int = 5000, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[bytes], str]:
    """``launch_mlflow_server``, then wait until it answers (or stop it and raise ``DashboardError``)."""
    process, url = launch_mlflow_server(tracking_uri, host=host, port=port)
    try:
        wait_until_up(f"{url}/health", process, timeout_s=timeout_s)
    except BaseException:
        stop(process)
        raise
    return process, url


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Terminate a server started here and all its workers (it leads its own process group).

    SIGTERM first, so the server shuts down cleanly; after ``timeout_s``, or as soon as the
    server itself is gone, SIGKILL whatever is left of the group (MLflow's job consumers).
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def run_optuna_dashboard(storage_url: str, *, host: str = DEFAULT_HOST, port: int = 8080) -> None:
    """Serve optuna-dashboard over the study storage until SIGINT or SIGTERM (blocks).

    optuna-dashboard's WSGI app on the standard library's server, stopped by ``shutdown()``
    from the signal handler: an exception raised by a signal in the middle of a request
    would be swallowed by ``wsgiref``'s error handling and the server would keep running.
    """
    from optuna_dashboard import wsgi

    app = wsgi(open_storage(storage_url))
    with make_server(host, port, app, server_class=_ThreadingWSGIServer) as server:

        def shut_down(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        previous = {sig: signal.signal(sig, shut_down) for sig in (signal.SIGINT, signal.SIGTERM)}
        log.info("optuna-dashboard on %s at http://%s:%d", mask_url(storage_url), host, port)
        try:
            server.serve_forever()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
