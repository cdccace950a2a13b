"""``blocknas validate`` on a real tiny study: MLflow run, report section, resume, two workers, bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState, create_trial

from blocknas.blocks import ArchConfig
from blocknas.search.cli import main
from blocknas.search.data import DataConfig
from blocknas.search.study import (
    ARCH_ATTR,
    Retraining,
    SelectedNetwork,
    TrainingBudget,
    TrainingRecords,
    ValidatedNetwork,
    Validation,
    load_study_config,
    retrain_all,
    run_search,
    summarize,
)
from blocknas.search.tracking import KIND_TAG, PARENT_RUN_ATTR, FileClaims, open_storage
from blocknas.search.training import TrainConfig
from tests.conftest import quick_study, seed_mlflow_store

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

VALIDATE = ["--epochs", "2", "--random", "2", "--no-progress"]  # on a 1-epoch study


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_store: Path) -> Path:
    """A finished 5-trial study (1 epoch, synthetic data, eager latency); its config file."""
    folder = tmp_path_factory.mktemp("validate")
    seed_mlflow_store(empty_mlflow_store, folder)
    settings: dict[str, Any] = quick_study("val", n_trials=5, runs_dir=str(folder / "runs"))
    settings["latency"]["runtime"] = "torch"  # no ONNX export per trial: the fixture's cost is the training
    settings |= {"tracking_uri": f"sqlite:///{folder}/runs/mlflow.db", "export_dir": str(folder / "discovered")}
    settings["validate"] = {"bootstrap": 100}  # the intervals' cost, not what is tested here
    path = folder / "val.yaml"
    path.write_text(yaml.safe_dump(settings))
    run_search(load_study_config(path), progress=False)
    return path


def _records(config: Path) -> list[dict[str, Any]]:
    path = config.parent / "runs/val/validate/results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_validate_end_to_end_resume_mlflow_and_report(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--config", str(study), *VALIDATE]) == 0
    records = _records(study)
    assert Counter(r["key"] for r in records).most_common(1)[0][1] == 1
    assert {r["kind"] for r in records} == {"longer", "noise"} and {r["epochs"] for r in records} == {1, 2}
    assert f"trained here: {len(records)} of {len(records)} trainings" in capsys.readouterr().out

    assert main(["validate", "--config", str(study), *VALIDATE]) == 0  # a rerun trains nothing
    out = capsys.readouterr().out
    assert f"trained here: 0 of {len(records)} trainings" in out and "Kendall τ" in out
    assert _records(study) == records

    storage = open_storage(str(study.parent / "runs/optuna.journal"))
    parent = optuna.load_study(study_name="val", storage=storage).user_attrs[PARENT_RUN_ATTR]
    client = MlflowClient(f"sqlite:///{study.parent}/runs/mlflow.db")
    query = f"tags.`mlflow.parentRunId` = '{parent}' and tags.`{KIND_TAG}` = 'validate'"
    [run] = client.search_runs([client.get_run(parent).info.experiment_id], query)  # one run, however many times
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert {"tau", "tau_low", "tau_high", "rho", "rho_low", "rho_high", "noise_tau", "front_kept"} <= set(metrics)
    assert metrics["tau_low"] <= metrics["tau"] <= metrics["tau_high"] and metrics["n"] == len(records) / 2
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"validate.json", "validate.md"}

    assert main(["report", "--config", str(study)]) == 0
    summary = (study.parent / "runs/val/report/summary.md").read_text()
    assert "## Validation" in summary and "### Validation of study `val`: 2 epochs" in summary
    assert main(["doctor", "--config", str(study)]) == 0  # the validation run is no trial's run


def _jobs(n: int) -> list[Retraining]:
    arch = ArchConfig.from_dict({"stages": [{"block": "standard", "out_chs": 8}], "num_classes": 10})
    net = SelectedNetwork(0, True, arch, "x", 1.0, 100, 0.5)
    return [Retraining(f"k{i}", "longer", net, TrainConfig(), DataConfig(), 0) for i in range(n)]


def _slow_train(log: Path, seconds: float) -> Callable[[Retraining], tuple[float, float]]:
    def train(job: Retraining) -> tuple[float, float]:
        with log.open("a") as handle:
            handle.write(f"{job.key} {os.getpid()}\n")
        time.sleep(seconds)
        return 0.5, seconds

    return train


def _worker(jobs: list[Retraining], folder: Path, seconds: float) -> None:
    retrain_all(jobs, TrainingRecords(folder), _slow_train(folder / "started.log", seconds), poll_s=0.05)


def test_two_processes_share_the_work_and_a_killed_ones_is_taken_over(tmp_path: Path) -> None:
    """Real processes (forked), real claim files and results file; the training is a stand-in."""
    fork = multiprocessing.get_context("fork")
    jobs = _jobs(8)
    workers = [fork.Process(target=_worker, args=(jobs, tmp_path, 0.3)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    started = [line.split() for line in (tmp_path / "started.log").read_text().splitlines()]
    assert sorted(key for key, _ in started) == sorted(job.key for job in jobs)  # each trained once
    assert len({pid for _, pid in started}) == 2  # by both
    assert sorted(TrainingRecords(tmp_path).read()) == sorted(job.key for job in jobs)

    folder = tmp_path / "killed"
    victim = fork.Process(target=_worker, args=(jobs[:2], folder, 60.0))
    victim.start()
    deadline = time.monotonic() + 30
    while not (folder / "started.log").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.kill()  # mid-training: its claim stays, its holder is gone
    victim.join()
    assert retrain_all(jobs[:2], TrainingRecords(folder), _slow_train(folder / "started.log", 0.0), poll_s=0.05) == 2
    assert sorted(TrainingRecords(folder).read()) == ["k0", "k1"] and not list((folder / "claims").iterdir())


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--study-name", "two"], "has 2 complete trial(s)"),
        (["--study-name", "nope"], "no study named 'nope'"),
        (["--random", "99"], "99 random networks asked for"),
        (["--epochs", "0"], "--epochs: 0 must be >= 1"),
        (["--storage", "missing.db"], "no study storage at missing.db"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    study: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = open_storage(str(study.parent / "runs/optuna.journal"))
    if "two" not in optuna.get_all_study_names(storage):  # two complete trials: too few to rank
        two = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
        arch = optuna.load_study(study_name="val", storage=storage).trials[0].user_attrs[ARCH_ATTR]
        for value in (0.5, 0.6):
            two.add_trial(create_trial(state=TrialState.COMPLETE, values=[value, 1.0], user_attrs={ARCH_ATTR: arch}))
    before = _snapshot(study.parent)
    assert main(["validate", "--config", str(study), *flags]) == 2
    assert message in capsys.readouterr().err
    assert _snapshot(study.parent) == before


def test_a_dead_holders_claim_is_taken_over_a_live_ones_is_not(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claims = FileClaims(tmp_path)
    (tmp_path / "k.0.claim").write_text(f"{socket.gethostname()}:{dead.pid}")
    assert claims.claim("k").held and (tmp_path / "k.1.claim").is_file()  # taken over, as claim 1
    live = f"{socket.gethostname()}:{os.getppid()}"
    (tmp_path / "j.0.claim").write_text(live)
    assert str(claims.claim("j").holder) == live
    claims.release("k")
    assert not list(tmp_path.glob("k.*"))


def test_the_result_round_trips_and_shows_data_as_text() -> None:
    budgets = (TrainingBudget(1, None, 0), TrainingBudget(5, 2000, 0), TrainingBudget(1, None, 1))
    nets = [
        ValidatedNetwork(i, i < 2, f"<script>x</script> | ![a](/etc/passwd) {i}", 0.1 * (i + 1), 100, s, s + 0.1, s)
        for i, s in enumerate((0.5, 0.7, 0.6, 0.8))
    ]
    validation = summarize("v|`x`", budgets, nets, seed=0, n_boot=100)
    assert Validation.from_json(json.loads(json.dumps(validation.to_json()))) == validation
    assert validation.agreement.tau.value == pytest.approx(1.0)
    assert [n.dominated_by for n in validation.front] == [(), ()]
    text = validation.markdown()
    assert "![a]" not in text and "\\<script>" in text and not re.search(r"(?<!\\)<", text)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "script" in line]
    assert len(rows) == len(nets) and all(len(re.findall(r"(?<!\\)\|", row)) == 10 for row in rows)  # 9 cells each
