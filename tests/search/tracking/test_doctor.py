"""``blocknas doctor`` only reads unless told ``--repair``, and names every Optuna/MLflow disagreement.

One real search (tiny networks on generated data, its Optuna journal and MLflow store under a
runs folder) is copied for each test; the damage and the disagreements are put in place the
way a crash or another tool leaves them, through Optuna's and MLflow's own public APIs.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from blocknas.search.cli import main
from blocknas.search.study import load_study_config, run_search
from blocknas.search.tracking import (
    PARENT_RUN_ATTR,
    RUN_ID_ATTR,
    WORKER_ATTR,
    StudyTracker,
    fail_abandoned_trials,
    open_storage,
)
from tests.conftest import quick_study, seed_mlflow_store

NAME = "doc"


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> Iterator[Path]:
    """The runs folder of a finished three-trial search."""
    folder = tmp_path_factory.mktemp("searched")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        seed_mlflow_store(empty_mlflow_store, folder)
        config = folder / f"{NAME}.yaml"
        config.write_text(yaml.safe_dump(quick_study(NAME, n_trials=3)))
        run_search(load_study_config(config), progress=False)
    yield folder / "runs"


@pytest.fixture
def runs(searched: Path, tmp_path: Path) -> Path:
    """A copy of the search's runs folder, for this test to damage."""
    return Path(shutil.copytree(searched, tmp_path / "runs"))


def _doctor(runs: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["doctor", "--study-name", NAME, "--runs-dir", str(runs), *flags])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_plain_doctor_reports_journal_damage_and_changes_nothing(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = runs / "optuna.journal"
    original = journal.read_bytes()
    lines = original.splitlines(keepends=True)
    middle = len(lines) // 2
    damaged = b"".join([*lines[:middle], b"\x00" * 64 + b"\n", *lines[middle:], b'{"op_code":6,"worker'])
    journal.write_bytes(damaged)
    stores = {p.name: _digest(p) for p in runs.iterdir() if p.is_file()}

    code, out = _doctor(runs, capsys)
    assert code == 1, out
    assert f"journal {journal}: line {middle + 1} is not a readable record" in out, out
    assert "ends in a torn record" in out, out
    assert out.count("(repairable with --repair)") == 2, out
    assert journal.read_bytes() == damaged, "a plain doctor wrote to the journal"
    assert {p.name: _digest(p) for p in runs.iterdir() if p.is_file()} == stores, "a plain doctor wrote a file"

    code, out = _doctor(runs, capsys, "--repair")
    assert code == 0, out
    assert "repaired" in out and "consistent" in out.splitlines()[-1], out
    assert journal.read_bytes() == original
    assert (runs / "optuna.journal.bad").read_bytes().endswith(b"\x00" * 64 + b"\n")
    assert _doctor(runs, capsys) == (0, f"study {NAME}: 3 trials (3 complete), 3 MLflow child runs\nconsistent\n")


def test_doctor_names_every_state_disagreement(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    journal = runs / "optuna.journal"
    study = optuna.load_study(study_name=NAME, storage=open_storage(str(journal)))
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    first, second = (t.user_attrs[RUN_ID_ATTR] for t in study.trials[:2])
    client.update_run(first, status="RUNNING")  # a finished trial whose run was never ended
    client.set_terminated(second, status="FAILED")  # a complete trial whose run says it failed
    # A worker killed after ending its trial's run and before telling Optuna: RUNNING there, FINISHED here.
    running = study.ask()
    run = client.create_run(
        client.get_run(first).info.experiment_id,
        tags={MLFLOW_PARENT_RUN_ID: study.user_attrs[PARENT_RUN_ATTR], "optuna.trial_number": str(running.number)},
    )
    running.set_user_attr(RUN_ID_ATTR, run.info.run_id)
    client.set_terminated(run.info.run_id, status="FINISHED")
    before = journal.read_bytes()

    code, out = _doctor(runs, capsys)
    assert code == 1, out
    assert f"trial 0 is COMPLETE in Optuna but its run {first} is RUNNING in MLflow" in out, out
    assert f"trial 1 is COMPLETE in Optuna but its run {second} is FAILED in MLflow" in out, out
    assert f"trial 3 is RUNNING in Optuna but its run {run.info.run_id} is FINISHED in MLflow" in out, out
    assert "3 problem(s)" in out, out
    assert journal.read_bytes() == before
    assert [client.get_run(r).info.status for r in (first, second)] == ["RUNNING", "FAILED"], "a plain doctor wrote"

    code, out = _doctor(runs, capsys, "--repair")
    assert code == 1, out  # the RUNNING trial is not the doctor's to decide
    assert [client.get_run(r).info.status for r in (first, second)] == ["FINISHED", "FINISHED"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert journal.read_bytes() == before, "nothing in the journal needed repair"
    code, out = _doctor(runs, capsys)
    assert code == 1 and "1 problem(s)" in out, out
    assert f"trial 3 is RUNNING in Optuna but its run {run.info.run_id} is FINISHED in MLflow" in out, out


def test_a_resume_settles_what_a_worker_killed_between_mlflow_and_optuna_left(
    runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker killed after ending its trial's run and before telling Optuna (and one whose run was
    never ended after Optuna was told): the next worker's recovery leaves nothing for the doctor."""
    study = optuna.load_study(study_name=NAME, storage=open_storage(str(runs / "optuna.journal")))
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    unended = study.trials[0].user_attrs[RUN_ID_ATTR]
    client.update_run(unended, status="RUNNING")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    running = study.ask()
    running.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{int(dead.stdout)}")  # a process that is gone
    run = client.create_run(
        client.get_run(unended).info.experiment_id,
        tags={MLFLOW_PARENT_RUN_ID: study.user_attrs[PARENT_RUN_ATTR], "optuna.trial_number": str(running.number)},
    )
    running.set_user_attr(RUN_ID_ATTR, run.info.run_id)
    client.set_terminated(run.info.run_id, status="FINISHED")
    assert _doctor(runs, capsys)[0] == 1

    fail_abandoned_trials(study)  # what the next worker does first (search/study/start.py)
    StudyTracker(f"sqlite:///{runs / 'mlflow.db'}", NAME, runs_dir=runs).close_orphans(study)
    code, out = _doctor(runs, capsys)
    assert code == 0, out
    assert client.get_run(unended).info.status == "FINISHED"
    assert client.get_run(run.info.run_id).info.status == "KILLED"
