"""Storage and disk faults (issue 29): a full disk, a file-size limit, a read-only or immutable runs folder,
a lost database connection. Real ``blocknas search`` processes: each fault is one paragraph naming the path and
what to do, exit 2, and a rerun after the cause is gone finishes the study with every finished trial kept and
none trained twice.

A full disk is simulated without root tricks: the worker runs under a file-size limit
(``RLIMIT_FSIZE``, SIGXFSZ ignored), so a write past the limit fails with EFBIG, the same path through
the code as ENOSPC.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages._heartbeat import HeartbeatThread
from optuna.trial import TrialState

from blocknas.search.study import load_study_config, retried_trials, trial_counts
from blocknas.search.tracking import STOPPED_TAG, StudyTracker, diagnose, open_storage
from blocknas.search.tracking.attrs import PARENT_RUN_ATTR, RUN_ID_ATTR
from blocknas.search.tracking.fault_proxy import CuttableProxy
from blocknas.search.tracking.names import TRIAL_NUMBER_TAG
from tests.conftest import quick_study, seed_mlflow_store
from tests.helpers.configs import ablation


def write_config(folder: Path, name: str, **overrides: object) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(quick_study(name, **overrides)))
    return path


def _limited(max_bytes: int | None) -> Callable[[], None]:
    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if max_bytes is not None:  # a write past max_bytes fails with EFBIG instead of killing the worker
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return preexec


def search(folder: Path, config: Path, *args: str, max_file_bytes: int | None = None) -> tuple[int, str]:
    """``blocknas search`` in ``folder`` (no file it writes may grow past ``max_file_bytes``): exit status, output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress", *args]
    done = subprocess.run(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
        preexec_fn=_limited(max_file_bytes),
    )  # fmt: skip
    return done.returncode, done.stdout


def assert_one_paragraph(out: str, *words: str, command: str = "search") -> None:
    """Exit 2's message: no traceback, and the error names what the user must know."""
    assert "Traceback" not in out and "Should not reach" not in out, out[-3000:]
    error = next((line for line in out.splitlines() if line.startswith(f"blocknas {command}: error:")), None)
    assert error is not None, out[-3000:]
    for word in words:
        assert word in error, error


def study_of(config: Path, storage: str) -> optuna.Study:
    return optuna.load_study(study_name=load_study_config(config).name, storage=open_storage(storage))


def assert_finished_exactly(config: Path, storage: str, n_trials: int, tracking_uri: str | None = None) -> optuna.Study:
    """The study holds ``n_trials`` trained trials, none twice, and Optuna and MLflow agree (in the store at
    ``tracking_uri``, by default the config's folder's ``runs/mlflow.db``)."""
    study = study_of(config, storage)
    tracking_uri = tracking_uri or f"sqlite:///{config.parent / 'runs' / 'mlflow.db'}"
    assert trial_counts(study) == (n_trials, 0)
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = retried_trials(trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.number in retried for t in failed), "a trial cut short by the fault is retried, not counted"
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == n_trials, "none trained twice"
    diagnosis = diagnose(study, StudyTracker(tracking_uri, study.study_name))
    assert diagnosis.ok, diagnosis.problems
    return study


@pytest.fixture(scope="module")
def one_trial_sizes(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> dict[str, int]:
    """What a one-trial study writes, by file: ``mlflow.db`` and ``optuna.journal`` (bytes), measured."""
    folder = tmp_path_factory.mktemp("measure")
    seed_mlflow_store(empty_mlflow_store, folder)
    code, out = search(folder, write_config(folder, "measure"))
    assert code == 0, out[-3000:]
    return {name: (folder / "runs" / name).stat().st_size for name in ("mlflow.db", "optuna.journal")}


def test_a_full_disk_at_the_start_is_one_paragraph_and_a_rerun_recovers(bare_tmp_dir: Path) -> None:
    config = write_config(bare_tmp_dir, "full-start")
    code, out = search(bare_tmp_dir, config, max_file_bytes=4096)
    assert code == 2, out[-3000:]
    assert_one_paragraph(out, "cannot write", "What to do")

    code, out = search(bare_tmp_dir, config)
    assert code == 0, out[-3000:]
    assert_finished_exactly(config, "runs/optuna.journal", 1)


def test_the_mlflow_store_filling_mid_study_keeps_every_finished_trial(
    in_tmp_dir: Path, one_trial_sizes: dict[str, int]
) -> None:
    config = write_config(in_tmp_dir, "full-mlflow", n_trials=4)
    code, out = search(in_tmp_dir, config, max_file_bytes=one_trial_sizes["mlflow.db"])
    assert code == 2, out[-3000:]
    assert_one_paragraph(out, "cannot write", "mlflow.db")
    before = [t for t in study_of(config, "runs/optuna.journal").get_trials() if t.state == TrialState.COMPLETE]
    assert 1 <= len(before) < 4, "the limit falls mid-study"

    code, out = search(in_tmp_dir, config)
    assert code == 0, out[-3000:]
    study = assert_finished_exactly(config, "runs/optuna.journal", 4)
    for old in before:
        assert study.trials[old.number].values == old.values


def test_the_journal_filling_mid_trial_ends_the_parent_run_saying_why(
    tmp_path: Path, one_trial_sizes: dict[str, int], mlflow_server: str
) -> None:
    """The tracking server's disk has room, so the parent run records why the study stopped."""
    journal = str(tmp_path / "runs" / "optuna.journal")
    name = f"full-journal-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, name, n_trials=4, tracking_uri=mlflow_server)
    code, out = search(tmp_path, config, max_file_bytes=one_trial_sizes["optuna.journal"] + 1500)
    assert code == 2, out[-3000:]
    assert_one_paragraph(out, "cannot write", "optuna.journal", "File too large")
    study = study_of(config, journal)
    assert 1 <= trial_counts(study)[0] < 4, "the limit falls mid-study"
    parent = MlflowClient(mlflow_server).get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.info.status == "FAILED"
    assert "storage fault" in parent.data.tags[STOPPED_TAG] and "optuna.journal" in parent.data.tags[STOPPED_TAG]

    code, out = search(tmp_path, config)
    assert code == 0, out[-3000:]
    assert_finished_exactly(config, journal, 4, mlflow_server)
    assert MlflowClient(mlflow_server).get_run(study.user_attrs[PARENT_RUN_ATTR]).info.status == "FINISHED"


@contextlib.contextmanager
def _immutable(folder: Path) -> Iterator[None]:
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: no immutable folder to test with")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is refused here ({made.stderr.strip()}): no immutable folder to test with")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    made = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"a read-only bind mount is refused here ({made.stderr.strip()}): no read-only folder")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("protect", [_immutable, _read_only], ids=["immutable", "read-only-mount"])
def test_a_runs_folder_that_refuses_writes_is_one_paragraph(
    bare_tmp_dir: Path, protect: Callable[[Path], contextlib.AbstractContextManager[None]]
) -> None:
    """A study resumed in a runs folder made immutable (chattr +i) or mounted read-only: root ignores a chmod."""
    config = write_config(bare_tmp_dir, "refused")
    code, out = search(bare_tmp_dir, config)
    assert code == 0, out[-3000:]
    runs = bare_tmp_dir / "runs"
    with protect(runs):
        code, out = search(bare_tmp_dir, config, "--n-trials", "2")
        assert code == 2, out[-3000:]
        assert_one_paragraph(out, str(runs))
    code, out = search(bare_tmp_dir, config, "--n-trials", "2")
    assert code == 0, out[-3000:]
    assert_finished_exactly(config, "runs/optuna.journal", 2)


def test_a_lost_database_connection_mid_trial_exits_2_and_a_rerun_retries_the_trial(
    mlflow_store: Path, postgres_url: str
) -> None:
    """PostgreSQL cut off while the second trial trains: exit 2 naming the database (not an UnboundLocalError),
    the parent run FAILED saying why, and the rerun trains the cut trial again and the study's total, no more."""
    folder = mlflow_store.parent.parent
    name = f"lost-db-{uuid.uuid4().hex[:8]}"
    config = write_config(folder, name, n_trials=3, train={"epochs": 16, "batch_size": 64}, heartbeat_interval_s=2)
    proxy = CuttableProxy(("127.0.0.1", 5432))
    via_proxy = postgres_url.replace(":5432/", f":{proxy.port}/")
    try:
        proc = _start_until_mid_trial("search", config, folder, via_proxy, name, postgres_url)
        before = [t for t in _trials_of(name, postgres_url) if t.state == TrialState.COMPLETE]
        assert before, "a trial finished before the cut"
        proxy.cut()
        out, _ = proc.communicate(timeout=120)
        proxy.restore()
        assert proc.returncode == 2, out[-3000:]
        assert "UnboundLocalError" not in out
        assert_one_paragraph(out, "lost the connection to", f"127.0.0.1:{proxy.port}/test")
        study = study_of(config, postgres_url)
        parent = MlflowClient(f"sqlite:///{mlflow_store}").get_run(study.user_attrs[PARENT_RUN_ATTR])
        assert parent.info.status == "FAILED"
        assert "lost the connection" in parent.data.tags[STOPPED_TAG]

        code, out = search(folder, config, "--storage", via_proxy)
        assert code == 0, out[-3000:]
    finally:
        proxy.close()
    study = assert_finished_exactly(config, postgres_url, 3)
    for old in before:
        assert study.trials[old.number].values == old.values


def _start_until_mid_trial(
    command: str, config: Path, folder: Path, storage: str, name: str, postgres_url: str
) -> subprocess.Popen[str]:
    """``blocknas <command>`` on ``storage`` (one thread), returned once a trial (a cell) finished and the next
    one is training with its MLflow run, or the process ended, or 300 s passed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    argv = [sys.executable, "-m", "blocknas.search.cli", command, "--config", str(config), "--no-progress"]
    proc = subprocess.Popen(
        [*argv, "--storage", storage], cwd=folder, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, preexec_fn=_limited(None),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        trials = _trials_of(name, postgres_url)
        if any(t.state == TrialState.COMPLETE for t in trials) and any(
            t.state == TrialState.RUNNING and RUN_ID_ATTR in t.user_attrs for t in trials
        ):
            break
        time.sleep(0.3)
    return proc


def test_a_lost_database_connection_mid_cell_ends_the_ablation_saying_why(
    mlflow_store: Path, postgres_url: str
) -> None:
    """``blocknas ablate`` on PostgreSQL cut off while its second cell trains: exit 2 in one paragraph naming the
    database, the cut cell failed and retried (or left RUNNING for the next run's recovery), the parent run
    FAILED saying why; the rerun trains every cell exactly once and the doctor finds Optuna and MLflow agree."""
    folder = mlflow_store.parent.parent
    name = f"lost-db-ablation-{uuid.uuid4().hex[:8]}"
    config = folder / f"{name}.yaml"
    settings = ablation(name=name, train={"epochs": 16, "batch_size": 64}, heartbeat_interval_s=2).to_dict()
    config.write_text(yaml.safe_dump(settings))
    proxy = CuttableProxy(("127.0.0.1", 5432))
    via_proxy = postgres_url.replace(":5432/", f":{proxy.port}/")
    try:
        proc = _start_until_mid_trial("ablate", config, folder, via_proxy, name, postgres_url)
        before = [t for t in _trials_of(name, postgres_url) if t.state == TrialState.COMPLETE]
        assert before, "a cell finished before the cut"
        [cut] = [t.number for t in _trials_of(name, postgres_url) if t.state == TrialState.RUNNING]
        proxy.cut()
        out, _ = proc.communicate(timeout=120)
        proxy.restore()
        assert proc.returncode == 2, out[-3000:]
        assert_one_paragraph(out, "lost the connection to", f"127.0.0.1:{proxy.port}/test", command="ablate")
        study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
        parent = MlflowClient(f"sqlite:///{mlflow_store}").get_run(study.user_attrs[PARENT_RUN_ATTR])
        assert parent.info.status == "FAILED", "the parent run ends, saying why"
        assert "lost the connection" in parent.data.tags[STOPPED_TAG]
        cut_trial = study.trials[cut]
        assert cut_trial.state == TrialState.RUNNING or (
            cut_trial.state == TrialState.FAIL and cut in retried_trials(study.trials)
        ), "the cut cell is queued for retry, or left for the next run's recovery"

        env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
        command = [sys.executable, "-m", "blocknas.search.cli", "ablate", "--config", str(config), "--no-progress"]
        done = subprocess.run(
            [*command, "--storage", via_proxy], cwd=folder, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=600, preexec_fn=_limited(None),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:]
        assert "incomplete" not in done.stdout, done.stdout[-3000:]
    finally:
        proxy.close()
    study = optuna.load_study(study_name=name, storage=open_storage(postgres_url))
    trials = study.trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = retried_trials(trials)
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL), "a cut cell is retried"
    cells = [(t.params["variant"], t.params["seed"]) for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(cells) == sorted((v, s) for v in ("block=separable", "block=standard") for s in (0, 1)), (
        "every cell trained exactly once"
    )
    for old in before:
        assert study.trials[old.number].values == old.values
    tracker = StudyTracker(f"sqlite:///{mlflow_store}", name)
    parent = tracker.client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.info.status == "FINISHED" and STOPPED_TAG not in parent.data.tags, "the rerun's ending holds"
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems


def _trials_of(name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()
    except KeyError:  # not created yet
        return []


def test_the_heartbeat_outlives_a_lost_database_connection(postgres_url: str) -> None:
    """PostgreSQL cut off for a moment: Optuna's heartbeat thread (no exception handling of its own) went on
    after the blip and recorded the next heartbeat. Before, its first failed heartbeat raised in that thread
    (a traceback on the worker's output) and killed it: the worker trained on with no heartbeat, and a worker on
    another host failed the live trial as stale after the grace period and trained it again (benchmarks/chaos.py
    with storage outages found it)."""
    proxy = CuttableProxy(("127.0.0.1", 5432))
    try:
        storage = open_storage(postgres_url.replace(":5432/", f":{proxy.port}/"), heartbeat_interval=1)
        study = optuna.create_study(storage=storage, study_name=f"heartbeat-{uuid.uuid4().hex[:8]}")
        trial_id = study.ask()._trial_id
        thread = HeartbeatThread(trial_id, storage)  # what Optuna runs beside every trial
        thread.start()
        while (first := _heartbeat_of(postgres_url, trial_id)) is None:  # its first, recorded at once
            time.sleep(0.1)
        proxy.cut()
        cut_off = proxy.dropped  # the pooled connections
        while proxy.dropped == cut_off:  # a heartbeat's reconnection refused: that heartbeat failed
            time.sleep(0.1)
        proxy.restore()
        deadline = time.monotonic() + 30
        while (_heartbeat_of(postgres_url, trial_id) or first) <= first and time.monotonic() < deadline:
            time.sleep(0.2)
        assert thread._thread is not None and thread._thread.is_alive(), "the heartbeat thread died on the blip"
        assert (_heartbeat_of(postgres_url, trial_id) or first) > first, "no heartbeat after the connection came back"
        thread.join()
    finally:
        proxy.close()


def _heartbeat_of(postgres_url: str, trial_id: int) -> datetime.datetime | None:
    """The trial's last heartbeat as PostgreSQL holds it (read without the proxy)."""
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        row = conn.execute("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = %s", (trial_id,)).fetchone()
    return None if row is None else row[0]


def test_a_run_id_the_study_storage_refuses_leaves_no_running_run(tmp_path: Path, empty_mlflow_store: Path) -> None:
    """The trial's run created, then the study storage refuses to record its id (a lost database did, between
    the two: benchmarks/chaos.py's PostgreSQL cut): the run ends KILLED, not RUNNING forever, and the doctor
    matches it to its failed trial by number. Before, the run stayed RUNNING and the doctor said the trial
    points to run None."""
    store = seed_mlflow_store(empty_mlflow_store, tmp_path)
    study = optuna.create_study(storage=open_storage(str(tmp_path / "runs" / "optuna.journal")), study_name="refused")
    tracker = StudyTracker(f"sqlite:///{store}", "refused", runs_dir=tmp_path / "runs")
    parent = tracker.ensure_parent(study, params={})
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)  # its worker's recovery failed it; its writes are refused from now on
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        tracker.start_child(parent, trial, "trial-0000", {TRIAL_NUMBER_TAG: "0"})
    [run] = tracker.children(parent)
    assert run.info.status == "KILLED"
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems
