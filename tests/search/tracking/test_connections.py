"""A worker's connection budget on PostgreSQL: one pooled engine per storage URL, reused, bounded, disposed."""

from __future__ import annotations

import uuid

import optuna
import psycopg
import pytest

from blocknas.search.tracking import RDB_CONNECTIONS_PER_WORKER, dispose_storages, open_storage

pytestmark = pytest.mark.services


def _connections(postgres_url: str) -> int:
    """Client connections to the test database, this query's own excluded."""
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_polling_a_study_hundreds_of_times_keeps_the_connection_count_flat(postgres_url: str) -> None:
    name = f"poll-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(postgres_url))
    try:
        optuna.load_study(study_name=name, storage=open_storage(postgres_url)).get_trials()
        before = _connections(postgres_url)
        for _ in range(300):  # the polling helpers of the scale-out tests, five times a second for a minute
            optuna.load_study(study_name=name, storage=open_storage(postgres_url)).get_trials()
        after = _connections(postgres_url)
        # other tests' workers may connect meanwhile; this process adds at most its pool
        assert after - before <= RDB_CONNECTIONS_PER_WORKER, (before, after)
        assert open_storage(postgres_url) is open_storage(postgres_url)
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(postgres_url))


def test_disposing_closes_this_processs_connections(postgres_url: str) -> None:
    storage = open_storage(postgres_url)
    optuna.get_all_study_names(storage)
    assert storage.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    dispose_storages()
    assert storage.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert open_storage(postgres_url) is not storage, "a fresh storage after disposal"
