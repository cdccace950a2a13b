"""Many workers, crashes and bad input, against real storages and a real MLflow server."""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from mlflow.tracking import MlflowClient

from blocknas.search.cli import main
from blocknas.search.study import (
    SURPLUS_ATTR,
    load_study_config,
    optimize_until_done,
    run_search,
    threads_per_worker,
    trial_counts,
)
from blocknas.search.tracking import (
    PARENT_RUN_ATTR,
    RUN_ID_ATTR,
    WORKER_ATTR,
    StudyTracker,
    diagnose,
    dispose_storages,
    mask_url,
    open_storage,
    worker_id,
)
from tests.conftest import ran, require_service
from tests.helpers.configs import ablation
from tests.helpers.workers import TINY, finish, states, wait_for, worker, write_config


def check_consistent(config_path: Path, storage: str, tracking_uri: str, n_trials: int) -> optuna.Study:
    config = load_study_config(config_path)
    study = optuna.load_study(study_name=config.name, storage=open_storage(storage))
    assert trial_counts(study) == (n_trials, 0)
    # two workers that both found one trial left may both start one: the one numbered past the
    # total is discarded before it runs (no MLflow run), so exactly n_trials ran
    surplus = [t for t in study.trials if SURPLUS_ATTR in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.FAIL and RUN_ID_ATTR not in t.user_attrs for t in surplus)
    assert len(study.trials) == n_trials + len(surplus), "no duplicated trials"
    tracker = StudyTracker(tracking_uri, config.name)
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems
    assert diagnosis.children == n_trials
    return study


def trained_by(study: optuna.Study) -> set[str]:
    """The workers that ran the study's trials (a surplus trial is discarded before any worker stamps it)."""
    return {t.user_attrs[WORKER_ATTR] for t in ran(study.trials)}


def test_a_trial_started_past_the_total_by_a_racing_worker_is_discarded_unrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting and starting are two steps: another worker can finish the last trial in between.

    Reproduced in one process by letting the other worker's trial happen right after this
    worker counted; seen for real once in a two-worker PostgreSQL run (7 trials for 6).
    """
    from blocknas.search.study import runner

    study = optuna.create_study()
    looks = []

    def counted_just_before_another_worker_took_the_last_trial(study: optuna.Study) -> tuple[int, int]:
        counts = trial_counts(study)
        looks.append(counts)
        if len(looks) == 2:  # the loop's first look (the first sets the progress bar)
            # the other worker, between this count and this worker's ask (pruned: it counts, and has no front row)
            other = study.ask()
            other.set_user_attr(WORKER_ATTR, "other-host:1")
            study.tell(other, state=optuna.trial.TrialState.PRUNED)
        return counts

    monkeypatch.setattr(runner, "trial_counts", counted_just_before_another_worker_took_the_last_trial)
    ran: list[int] = []
    runner.optimize_until_done(study, lambda trial: ran.append(trial.number) or 1.0, n_trials=1, progress=False)
    assert ran == [], "the surplus trial must not run"
    other, surplus = study.get_trials()
    assert (other.state, surplus.state) == (optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    assert surplus.user_attrs[SURPLUS_ATTR] is True
    assert trial_counts(study) == (1, 0), "the surplus trial is not counted"
    assert trained_by(study) == {"other-host:1"}, "the surplus trial has no worker"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_trial_failed_by_another_worker_after_its_last_write_is_retried_not_a_crash(tmp_path: Path) -> None:
    """A worker on another host cannot see this one live; past the grace period it fails the trial.

    If that lands after the objective's last write, the objective returns normally and Optuna's
    tell of the FAIL trial ends in its own ``AssertionError('Should not reach.')`` (its
    ``ValueError`` only as context), which crashed the worker instead of letting it go on.
    """
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"))
    ran_trials: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran_trials.append(trial.number)
        if trial.number == 0:  # what the other host's fail_stale_trials does, after this trial's last write
            study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            failed = study._storage.get_trial(trial._trial_id)
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, failed)
            return 1.0
        raise optuna.TrialPruned()  # counts, and needs no front row

    optimize_until_done(study, objective, n_trials=1, progress=False)
    assert ran_trials == [0, 1], "the retry ran"
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("storage_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def test_a_live_workers_trial_is_not_failed_when_its_heartbeat_stalls(
    tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A heartbeat thread shares its worker's GIL, so a live worker can go silent past the grace period.

    Seen as trial 0 FAIL plus a retry (5 trials for 4) in two-worker runs under load: the first
    trial's ONNX export imports held a worker's GIL for 6.5 s, past the 4-s grace of
    ``heartbeat_interval_s: 2``; the other worker failed the trial and ran its retry while the
    first trained it on. Reproduced by silencing the heartbeat mid-trial and dating its last beat
    a day back, then running the other worker's check (Optuna's ``fail_stale_trials``).
    """
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if storage_kind == "sqlite" else request.getfixturevalue("postgres_url")
    storage = open_storage(url, heartbeat_interval=1)
    study = optuna.create_study(study_name=f"stall-{uuid.uuid4().hex[:8]}", storage=storage)
    beat, lock = storage.record_heartbeat, threading.Lock()
    silenced = threading.Event()

    def record_heartbeat(trial_id: int) -> None:
        with lock:
            if not silenced.is_set():
                beat(trial_id)

    def stall_heartbeat(trial_id: int) -> None:
        with lock:
            silenced.set()
            beat(trial_id)  # the last beat (the thread may not have beaten yet), then a day of silence
            backdate = sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :id")
            with storage.engine.begin() as connection:
                connection.execute(
                    backdate.bindparams(sqlalchemy.bindparam("t", type_=sqlalchemy.DateTime)),
                    {"t": datetime.now() - timedelta(days=1), "id": trial_id},
                )

    monkeypatch.setattr(storage, "record_heartbeat", record_heartbeat)
    ran_trials: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran_trials.append(trial.number)
        trial.set_user_attr(WORKER_ATTR, worker_id())  # as Objective does first
        if trial.number == 0:
            stall_heartbeat(trial._trial_id)
            optuna.storages.fail_stale_trials(study)  # the other worker, before its next trial
            trial.set_user_attr("latency_ms", 1.0)  # the objective's next write, as after a real export
        raise optuna.TrialPruned()  # counts, and needs no front row

    optimize_until_done(study, objective, n_trials=2, progress=False)
    assert ran_trials == [0, 1], "trial 0 ran once, no retry of it"
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.PRUNED] * 2


@pytest.mark.services
def test_two_workers_on_postgres_and_an_mlflow_server(tmp_path: Path, postgres_url: str, mlflow_server: str) -> None:
    name = f"pg-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, name, n_trials=6)
    args = ("--storage", postgres_url, "--tracking-uri", mlflow_server)
    procs = [worker(config, *args, cwd=tmp_path) for _ in range(2)]
    outputs = [finish(proc) for proc in procs]
    study = check_consistent(config, postgres_url, mlflow_server, 6)
    experiment = MlflowClient(mlflow_server).get_experiment_by_name(name)
    assert experiment is not None
    page = f"MLflow:    {mlflow_server}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
    assert all(page in out for out in outputs), outputs[0][-2000:]  # the server is the UI, one unbroken line
    assert len(trained_by(study)) == 2, "both workers ran trials"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize(("storage_kind", "n_trials"), [("journal", 4), ("sqlite", 4)])
def test_blocknas_workers_share_one_study(
    tmp_path: Path, storage_kind: str, n_trials: int, request: pytest.FixtureRequest
) -> None:
    """``blocknas workers -n 2`` on the default journal file and on a SQLite Optuna storage.

    The journal run starts on no MLflow store, so its two workers create one together (under
    the store's lock); the SQLite run finds one already made.
    """
    if storage_kind == "sqlite":
        request.getfixturevalue("mlflow_store")
    config = write_config(tmp_path, storage_kind, n_trials=n_trials)
    if storage_kind == "journal":
        storage, flags = str(tmp_path / "runs" / "optuna.journal"), []
    else:
        storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
        flags = ["--storage", storage]
    command = [sys.executable, "-m", "blocknas.search.cli", "workers", "-n", "2", "--config", str(config), *flags]
    done = subprocess.run(
        [*command, "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    study = check_consistent(config, storage, f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", n_trials)
    assert len(trained_by(study)) <= 2


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_workers_opening_a_fresh_sqlite_storage_at_once_all_get_it(tmp_path: Path) -> None:
    """Optuna's schema creation races (a duplicate ``alembic_version`` row); every racer must still open it.

    Four threads with real SQLite connections open each fresh database at the same instant.
    Without the retry, about three in four of them failed (found as a flaky two-worker run).
    """
    failures: list[str] = []
    for round_ in range(5):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        start = threading.Barrier(4)

        def open_it(url: str = url, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                optuna.create_study(study_name=f"s{threading.get_ident()}", storage=open_storage(url))
            except Exception as exc:  # any failure is the finding
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        dispose_storages()
        assert len(optuna.get_all_study_names(open_storage(url))) == 4
    assert not failures, failures[:2]


@pytest.mark.parametrize(("n_workers", "cores", "threads"), [(1, 8, 8), (2, 8, 4), (3, 8, 2), (2, 2, 1), (4, 2, 1)])
def test_threads_per_worker_never_oversubscribes(n_workers: int, cores: int, threads: int) -> None:
    assert threads_per_worker(n_workers, cores) == threads
    assert n_workers * threads <= cores or threads == 1, "more workers than cores still get one thread each"


def test_workers_needs_at_least_one(bare_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(bare_tmp_dir, "x")
    assert main(["workers", "-n", "0", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "--workers: 0 workers requested; give -n 1 or more" in err and err.count("\n") == 1
    assert not (bare_tmp_dir / "runs").exists()


@pytest.mark.services
def test_redis_journal_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_study_config(write_config(tmp_path, f"redis-{uuid.uuid4().hex[:8]}", n_trials=2))
    result = run_search(config.with_overrides(storage="redis://127.0.0.1:6379/0"), progress=False)
    assert trial_counts(result.study) == (2, 0)


def _kill_mid_trial(tmp_path: Path, name: str, storage: str, sig: int) -> tuple[subprocess.Popen, list]:
    """Start a worker, wait until one trial finished and the next is running, send ``sig``."""
    # Trials long enough (16 epochs: ~3 s on an idle machine, longer under load) that the signal
    # lands mid-trial: the trial is seen running within one poll (0.2 s plus a storage read).
    config = write_config(tmp_path, name, n_trials=3, train={"epochs": 16, "batch_size": 64})
    proc = worker(config, "--storage", storage, cwd=tmp_path)

    def mid_trial() -> bool:
        trials = states(storage, name)
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and RUN_ID_ATTR in t.user_attrs]
        return bool(done) and bool(running)

    wait_for(mid_trial, what="a finished trial and a running one")
    before = [t for t in states(storage, name) if t.state == optuna.trial.TrialState.COMPLETE]
    proc.send_signal(sig)
    return proc, before


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
@pytest.mark.parametrize("storage_kind", ["journal", "postgres"])
def test_sigkill_mid_trial_then_resume_loses_nothing(
    tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest
) -> None:
    storage = (
        str(tmp_path / "runs" / "optuna.journal")
        if storage_kind == "journal"
        else request.getfixturevalue("postgres_url")
    )
    name = f"kill-{uuid.uuid4().hex[:8]}"
    proc, before = _kill_mid_trial(tmp_path, name, storage, signal.SIGKILL)
    proc.wait(timeout=30)
    killed = [t for t in states(storage, name) if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1

    finish(worker(tmp_path / f"{name}.yaml", "--storage", storage, cwd=tmp_path))
    trials = states(storage, name)
    for old in before:
        assert trials[old.number].state == optuna.trial.TrialState.COMPLETE
        assert trials[old.number].values == old.values
    dead = trials[killed[0].number]
    assert dead.state == optuna.trial.TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    assert trial_counts(study) == (3, 0)
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", name)
    dead_run = tracker.client.get_run(dead.user_attrs[RUN_ID_ATTR])
    assert dead_run.info.status == "KILLED"
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
def test_rdb_heartbeat_fails_and_retries_a_dead_workers_trial(tmp_path: Path) -> None:
    """Without local recovery (as for a worker on another machine), heartbeats catch the death."""
    storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    name = "heartbeat"
    proc, _ = _kill_mid_trial(tmp_path, name, storage, signal.SIGKILL)
    proc.wait(timeout=30)
    study = optuna.load_study(study_name=name, storage=open_storage(storage, heartbeat_interval=2))
    stale = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING]
    assert len(stale) == 1
    time.sleep(5)  # past the grace period (2 × heartbeat interval)
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials()
    assert trials[stale[0].number].state == optuna.trial.TrialState.FAIL
    assert any(
        t.state == optuna.trial.TrialState.WAITING and t.system_attrs.get("failed_trial") == stale[0].number
        for t in trials
    )


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_fails_the_trial_cleanly_and_exits_130(tmp_path: Path, sig: signal.Signals) -> None:
    storage = str(tmp_path / "runs" / "optuna.journal")
    proc, _ = _kill_mid_trial(tmp_path, "interrupt", storage, sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:]
    assert "interrupted" in out
    assert "Traceback" not in out, out[-3000:]  # one line says it: not Optuna's "Trial N failed" traceback
    trials = states(storage, "interrupt")
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1
    run = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}").get_run(failed[0].user_attrs[RUN_ID_ATTR])
    assert run.info.status == "KILLED"


def test_doctor_checks_a_study_and_writes_nothing(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(in_tmp_dir, "checked", n_trials=2)
    study = run_search(load_study_config(config), progress=False).study
    storage = str(in_tmp_dir / "runs" / "optuna.journal")
    capsys.readouterr()
    assert main(["doctor", "--config", str(config)]) == 0
    assert main(["doctor", "--study-name", "checked"]) == 0, "no study YAML needed"
    out = capsys.readouterr().out
    assert out.count("study checked: 2 trials (2 complete), 2 MLflow child runs\nconsistent\n") == 2, out

    assert main(["doctor", "--study-name", "typo", "--storage", storage]) == 2
    err = capsys.readouterr().err
    assert f"no study named 'typo' in {storage}; studies there: checked" in err and err.count("\n") == 1, err
    assert optuna.get_all_study_names(open_storage(storage)) == ["checked"], "the unknown name was not created"
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    assert client.get_experiment_by_name("typo") is None
    missing = in_tmp_dir / "elsewhere.db"
    assert main(["doctor", "--study-name", "checked", "--storage", f"sqlite:///{missing}"]) == 2
    assert not missing.exists()

    orphan = study.ask()  # its worker was killed between asking for the trial and creating its MLflow run
    study.tell(orphan, state=optuna.trial.TrialState.FAIL)
    assert main(["doctor", "--study-name", "checked"]) == 0, "a failed trial that never got a run is consistent"
    assert "consistent\n" in capsys.readouterr().out
    client.delete_run(study.trials[1].user_attrs[RUN_ID_ATTR])
    assert main(["doctor", "--study-name", "checked"]) == 1
    assert "problem: trial 1 (COMPLETE) has 0 MLflow child runs" in capsys.readouterr().out


def test_doctor_checks_an_ablation_by_name(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from blocknas.search.ablation import run_ablation

    assert run_ablation(ablation(seeds=1), progress=False).complete
    capsys.readouterr()
    assert main(["doctor", "--study-name", "abl"]) == 0
    assert "study abl: 2 trials (2 complete), 2 MLflow child runs\nconsistent" in capsys.readouterr().out


def _run_cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["search", "--config", str(config), "--no-progress", *args])
    return code, capsys.readouterr().err


BAD_INPUTS = {
    "syntax": ("name: x\ntrain: {epochs: 1\n", r"bad\.yaml: YAML syntax error: line"),
    "unknown_key": (yaml.safe_dump({"name": "x", **TINY, "trian": {}}), r"bad\.yaml: trian: unknown key"),
    "wrong_type": (yaml.safe_dump({"name": "x", **TINY, "n_trials": "many"}), r"n_trials: expected an integer"),
    "unknown_dataset": (
        yaml.safe_dump({"name": "x", **TINY, "data": {"name": "nosuchdata"}}),
        r"data\.name: 'nosuchdata' is not one of",
    ),
    "impossible_constraint": (
        yaml.safe_dump({"name": "x", **TINY, "constraints": {"params": 0}}),
        r"constraints\.params: 0 is impossible",
    ),
    "missing_files": (
        yaml.safe_dump({"name": "x", **TINY, "data": {"name": "imagefolder", "root": "/nonexistent/images"}}),
        r"/nonexistent/images",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_and_writes_nothing(case: str, in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, pattern = BAD_INPUTS[case]
    config = in_tmp_dir / "bad.yaml"
    config.write_text(text)
    code, err = _run_cli(config, capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1, "one paragraph"
    import re

    assert re.search(pattern, err), err
    assert not (in_tmp_dir / "runs" / "optuna.journal").exists()


def test_unknown_block_in_space_exits_2(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = in_tmp_dir / "space.yaml"
    space.write_text(
        yaml.safe_dump({"input_size": [16, 16], "stages": [{"blocks": ["separable", "sepconv"], "widths": [8]}]})
    )
    config = write_config(in_tmp_dir, "x", space=str(space))
    code, err = _run_cli(config, capsys=capsys)
    assert code == 2
    assert "sepconv" in err and "separable" in err and "space.yaml" in err


def test_unreachable_storage_exits_2(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(in_tmp_dir, "x")
    code, err = _run_cli(config, "--storage", "postgresql://u:hunter2@127.0.0.1:1/none", capsys=capsys)
    assert code == 2
    assert "cannot open study storage postgresql://u:***@127.0.0.1:1/none" in err
    assert "hunter2" not in err


def test_unreachable_tracking_server_exits_2(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(in_tmp_dir, "x")
    code, err = _run_cli(config, "--tracking-uri", "http://127.0.0.1:1", capsys=capsys)
    assert code == 2
    assert "MLflow tracking server http://127.0.0.1:1 is not reachable" in err
    assert not (in_tmp_dir / "runs" / "optuna.journal").exists()


def test_mask_url() -> None:
    assert mask_url("postgresql://bob:pa:ss@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_url("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert mask_url("runs/optuna.journal") == "runs/optuna.journal"


@pytest.mark.services
def test_storage_password_never_reaches_mlflow_or_output(
    in_tmp_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-pw"
    storage = postgres_url.replace("postgres@", f"postgres:{secret}@")  # trust auth ignores the password
    name = f"mask-{uuid.uuid4().hex[:8]}"
    config = write_config(in_tmp_dir, name, n_trials=1)
    code = main(["search", "--config", str(config), "--no-progress", "--storage", storage])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert secret not in out.out + out.err + caplog.text
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    study = optuna.load_study(study_name=name, storage=storage)
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    assert parent.data.params["storage"] == storage.replace(secret, "***")
    texts = [str(parent.data.params), str(parent.data.tags)]
    for run in client.search_runs([parent.info.experiment_id]):
        texts += [str(run.data.params), str(run.data.tags)]
    local = Path(client.download_artifacts(parent.info.run_id, "study.yaml"))
    texts.append(local.read_text())
    code = main(["report", "--config", str(config), "--storage", storage])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = in_tmp_dir / "runs" / name / "report"
    texts += [out.out + out.err, (report / "summary.md").read_text(), (report / "report.html").read_text()]
    assert f"study storage: `{storage.replace(secret, '***')}`" in texts[-2]  # the report names it, masked
    assert not any(secret in t for t in texts)


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_mlflow_servers_start_without_mlflows_job_runner(mlflow_server: str) -> None:
    port = mlflow_server.rsplit(":", 1)[1]
    servers = [
        int(p.parent.name)
        for p in Path("/proc").glob("[0-9]*/cmdline")
        if f"--port {port} " in _cmdline(int(p.parent.name)) + " " and "mlflow server" in _cmdline(int(p.parent.name))
    ]
    assert servers, f"no mlflow server process on port {port}"
    runners = [
        _cmdline(c) for s in servers for c in _children(s) if "huey" in _cmdline(c) or "_job_runner" in _cmdline(c)
    ]
    assert not runners, f"MLflow's job runner started beside the server: {runners}"


def test_a_surplus_or_interrupted_trial_leaves_no_optuna_traceback() -> None:
    """Optuna logs "Trial N failed ... because of the following error" with a traceback for any exception out of
    the objective; the runner drops it for a surplus trial (discarded before it ran: two workers raced for the
    last trial) and an interrupted one, as for a storage fault: the worker says each in one line (the chaos
    benchmark found the surplus trial's traceback in a worker's output)."""
    from blocknas.search.study.runner import SurplusTrial, _NoFaultTracebacks

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("optuna.study._optimize")
    logger.addHandler(handler)
    try:
        for exc in (SurplusTrial("trial 3 is past n_trials=3"), KeyboardInterrupt("signal 15")):

            def objective(trial: optuna.Trial, exc: BaseException = exc) -> float:
                raise exc

            with contextlib.suppress(KeyboardInterrupt):
                optuna.create_study().optimize(objective, n_trials=1, catch=(Exception,))
    finally:
        logger.removeHandler(handler)
    failed = [r for r in records if r.exc_info and r.exc_info[1] is not None]
    assert [type(r.exc_info[1]) for r in failed] == [SurplusTrial, KeyboardInterrupt]  # type: ignore[index]
    assert not [r for r in failed if _NoFaultTracebacks().filter(r)]
