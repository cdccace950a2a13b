"""Shared test fixtures: small thread counts, isolated working directories, service checks, quick configs."""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from optuna.trial import FrozenTrial

from blocknas.blocks import registry
from blocknas.search.study import SURPLUS_ATTR

REPO_ROOT = Path(__file__).resolve().parent.parent


def quick_run(**overrides: Any) -> dict[str, Any]:
    """Data, training and latency settings (as a config YAML reads) under which a trial takes seconds:
    one epoch on 64 synthetic samples, latency timed for 0.05 s. A fresh copy; ``overrides`` replace keys."""
    settings = {
        "data": {"name": "synthetic", "num_samples": 64},
        "train": {"epochs": 1, "batch_size": 64},
        "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
    }
    return copy.deepcopy({**settings, **overrides})


def quick_study(name: str, **overrides: Any) -> dict[str, Any]:
    """A one-trial random-search study on the tiny space, with :func:`quick_run`'s settings."""
    return quick_run(**{"name": name, "space": "tiny", "sampler": "random", "n_trials": 1, **overrides})


def ran(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that ran: not those discarded unrun because two workers raced for the last one."""
    return [t for t in trials if SURPLUS_ATTR not in t.user_attrs]


@pytest.fixture(autouse=True, scope="session")
def _few_threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_trial_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """``parallel: auto`` means one process per search here (``$BLOCKNAS_PARALLEL``): the suite already runs
    one test per core, and a test that wants several workers says so (``--parallel 2``, ``parallel: 2``)."""
    monkeypatch.setenv("BLOCKNAS_PARALLEL", "1")


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without a tracking URI (``$MLFLOW_TRACKING_URI`` or set in-process) and leaves
    none behind for later ones (``mlflow.set_tracking_uri`` sets both, and subprocesses inherit it)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from mlflow.tracking._tracking_service import utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)  # nor a URI set with mlflow.set_tracking_uri


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Blocks registered inside the test disappear afterwards."""
    monkeypatch.setattr(registry, "_BLOCKS", dict(registry._BLOCKS))
    yield


@pytest.fixture(scope="session")
def empty_mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty MLflow SQLite store, made once per test process by MLflow itself.

    Creating a store runs MLflow's ~60 schema migrations: 4-8 s on 2 shared cores, paid by
    every test that runs a study in a fresh folder. A copy of this one opens in milliseconds
    and is the same store MLflow would have made (tests of a store's first use take none).
    """
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def seed_mlflow_store(template: Path, folder: Path) -> Path:
    """Copy ``template`` to ``folder/runs/mlflow.db`` (the default tracking store of a study run in ``folder``)."""
    runs = folder / "runs"
    runs.mkdir(exist_ok=True)
    return Path(shutil.copy(template, runs / "mlflow.db"))


@pytest.fixture
def mlflow_store(tmp_path: Path, empty_mlflow_store: Path) -> Path:
    """``tmp_path/runs/mlflow.db``, migrated and empty: for workers started in ``tmp_path``."""
    return seed_mlflow_store(empty_mlflow_store, tmp_path)


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a SQLite store, shared by this test process's tests (each its own experiment).

    Started once (a server takes 10-30 s to answer on 2 busy cores), by the chaos benchmark's
    launcher: ready when ``/health`` answers, so no test's first request meets a server still starting.
    """
    chaos = load_benchmark("chaos")
    folder = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(empty_mlflow_store, folder / chaos.SERVER_STORE)
    process, url = chaos.start_mlflow_server(folder)
    try:
        yield url
    finally:
        chaos.stop(process)


@pytest.fixture
def bare_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test in an empty ``tmp_path`` (for tests that check what gets created there)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.fixture
def in_tmp_dir(bare_tmp_dir: Path, empty_mlflow_store: Path) -> Iterator[Path]:
    """Run the test with ``tmp_path`` as the working directory, ``runs/mlflow.db`` already migrated."""
    seed_mlflow_store(empty_mlflow_store, bare_tmp_dir)
    yield bare_tmp_dir


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is down, or fail when ``BLOCKNAS_REQUIRE_SERVICES=1`` (CI)."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("BLOCKNAS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message}, and BLOCKNAS_REQUIRE_SERVICES=1 requires it")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return "postgresql://postgres@127.0.0.1:5432/test"
