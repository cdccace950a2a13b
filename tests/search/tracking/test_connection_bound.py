"""Each worker stays within its documented PostgreSQL connection bound (real workers, real connections).

Two ``blocknas search`` workers share a study on PostgreSQL, each with its own ``PGAPPNAME``;
a sampler counts each one's connections in ``pg_stat_activity`` four times a second while
they run. Every worker's peak must stay within ``RDB_CONNECTIONS_PER_WORKER`` (the README's
connection budget), so ``N`` workers hold at most ``N × RDB_CONNECTIONS_PER_WORKER``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from optuna.storages import BaseStorage

from blocknas.search.tracking import RDB_CONNECTIONS_PER_WORKER, dispose_storages, open_storage
from tests.helpers.workers import finish, write_config

pytestmark = pytest.mark.services


class _Peaks(threading.Thread):
    """The most connections seen at once for each application name, sampled until stopped."""

    def __init__(self, url: str, apps: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.apps = url, apps
        self.peaks = dict.fromkeys(apps, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name="blocknas-test-sampler") as conn:
            while not self.stop.is_set():
                rows = conn.execute(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE application_name = ANY(%s) GROUP BY application_name",
                    (self.apps,),
                ).fetchall()
                for app, count in rows:
                    self.peaks[app] = max(self.peaks[app], int(count))
                time.sleep(0.1)


def test_each_worker_holds_at_most_its_bound_of_connections(tmp_path: Path, postgres_url: str) -> None:
    name = f"conn-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, name, n_trials=4)
    apps = [f"{name}-w{i}" for i in range(2)]
    sampler = _Peaks(postgres_url, apps)
    sampler.start()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress"]
    procs = [
        subprocess.Popen(
            [*command, "--storage", postgres_url],
            cwd=tmp_path,
            env={**env, "PGAPPNAME": app},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for app in apps
    ]
    try:
        for proc in procs:
            finish(proc)
    finally:
        sampler.stop.set()
        sampler.join()
    assert all(peak >= 1 for peak in sampler.peaks.values()), ("the sampler saw each worker", sampler.peaks)
    assert max(sampler.peaks.values()) <= RDB_CONNECTIONS_PER_WORKER, sampler.peaks


def test_one_process_opening_a_study_with_other_heartbeat_settings_shares_its_pool(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker opens its storage with the study's heartbeat; reading the study afterwards (the
    ``--parallel`` summary, a validation) opens it with the defaults. Both go through one pool."""
    app = f"pool-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PGAPPNAME", app)
    dispose_storages()
    storages = [open_storage(postgres_url, heartbeat_interval=2), open_storage(postgres_url)]
    sampler = _Peaks(postgres_url, [app])
    sampler.start()
    try:
        barrier = threading.Barrier(8)

        def busy(storage: BaseStorage) -> None:
            barrier.wait()
            for _ in range(20):
                storage.get_all_studies()  # type: ignore[attr-defined]
                with storage.engine.connect() as conn:  # type: ignore[attr-defined]
                    conn.exec_driver_sql("SELECT pg_sleep(0.02)")

        threads = [threading.Thread(target=busy, args=(storages[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sampler.stop.set()
        sampler.join()
        dispose_storages()
    assert 1 <= sampler.peaks[app] <= RDB_CONNECTIONS_PER_WORKER, sampler.peaks
