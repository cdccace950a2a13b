"""Screening (experimental): a pool of candidates inside one trial, the trial trains the kept one.

Real Optuna studies, a real MLflow store and real ``blocknas search`` processes, on the tiny space.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import FixedTrial, TrialState
from rich.console import Console

from blocknas.blocks import ArchConfig, parse
from blocknas.search.cli import main
from blocknas.search.pause_points import PAUSE_ENV
from blocknas.search.report import print_search_summary, report_study
from blocknas.search.study import SCREEN_PROXY_ATTR, StudyConfig, run_search, trial_counts
from blocknas.search.study.screened import KeptParams
from blocknas.search.study.start import make_sampler
from blocknas.search.tracking import PARENT_RUN_ATTR, RUN_ID_ATTR, open_storage
from blocknas.spaces import SearchSpace
from tests.conftest import REPO_ROOT, quick_study


def study_config(**overrides: object) -> StudyConfig:
    data = {
        "name": "p",
        "space": "tiny",
        "data": {"name": "synthetic", "max_train_samples": 200, "max_val_samples": 100},
        "train": {"epochs": 1, "batch_size": 50},
        "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
        "n_trials": 2,
        "sampler": "random",
        "proxies": ["params", "naswot", "snip"],
        "screen": {"proxy": "snip", "pool": 3},
    }
    data.update(overrides)
    return parse(StudyConfig, data)


def _children(client: MlflowClient, study: optuna.Study) -> list:
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    return client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")


def _trained_arch(space: SearchSpace, trial: optuna.trial.FrozenTrial) -> ArchConfig:
    """The architecture the trial's Optuna params describe (what the sampler learns from)."""
    return space.sample(FixedTrial(trial.params))


def test_a_screened_study_of_n_trials_has_n_trials_and_n_runs(in_tmp_dir: Path) -> None:
    """Each pool is inside its trial: N trials, N child runs, each trial's params are the network it
    trained, and its run records the pool. (Before: 3 trials and 3 runs per pool, the extras PRUNED.)"""
    # A params budget between the tiny space's smallest and largest networks: some candidates are over it.
    config = study_config(constraints={"params": 6000})
    result = run_search(config, progress=False)
    study = result.study
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 and trial_counts(study) == (2, 0)
    space = SearchSpace.load(config.space_path())
    client = MlflowClient(result.tracking_uri)
    runs = {r.info.run_id: r for r in _children(client, study)}
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs.values())
    for t in trials:
        arch = ArchConfig.from_dict(t.user_attrs["arch"])
        assert _trained_arch(space, t) == arch, "the sampler must learn the architecture that was trained"
        scores = t.user_attrs["screen.scores"]
        assert t.user_attrs[SCREEN_PROXY_ATTR] == "snip" and t.user_attrs["screen.pool_size"] == len(scores) == 3
        kept = t.user_attrs["screen.kept_score"]
        assert kept == max(s for s in scores if s is not None) == t.user_attrs["proxy.snip"]
        run = runs[t.user_attrs[RUN_ID_ATTR]]
        assert run.data.tags["blocknas.arch_hash"] == arch.short_hash()
        assert run.data.tags["blocknas.screen_proxy"] == "snip" and run.data.tags["blocknas.screen_pool"] == "3"
        assert float(run.data.tags["blocknas.screen_kept_score"]) == pytest.approx(kept)
        logged = json.loads(run.data.tags["blocknas.screen_scores"])  # null: over the params budget
        assert [x is None for x in logged] == [s is None for s in scores]
        assert all(x == pytest.approx(s, rel=1e-5) for x, s in zip(logged, scores) if s is not None)
        if t.state == TrialState.COMPLETE:
            assert {"proxy.params", "proxy.naswot", "proxy.snip", "train_seconds"} <= set(t.user_attrs)

    grown = run_search(study_config(constraints={"params": 6000}, n_trials=3), progress=False)
    assert trial_counts(grown.study) == (3, 0) and len(grown.study.trials) == 3
    assert len(_children(client, grown.study)) == 3
    console = Console(record=True, width=160)
    print_search_summary(grown, config, console)
    assert "snip" in console.export_text()
    report = report_study("p", storage_url=config.storage_url, tracking_uri=grown.tracking_uri)
    summary = (report.folder / "summary.md").read_text()
    assert "3 trials by `snip`, 9 candidates screened, 6 never trained" in summary
    assert main(["doctor", "--study-name", "p"]) == 0


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp", "random"])
def test_kept_params_make_the_trial_suggest_the_kept_candidate(sampler: str) -> None:
    """The study's sampler, wrapped, hands a kept trial exactly its candidate's values, also where it
    samples relatively (NSGA-II, GP) once it has history, and NSGA-II still counts the trial as its own."""
    config = study_config(sampler=sampler, n_trials=3)
    space = SearchSpace.load(config.space_path())
    directions = ["maximize", "minimize"]
    study = optuna.create_study(directions=directions, sampler=KeptParams(make_sampler(config, 0)))
    assert isinstance(study.sampler, KeptParams)
    for i in range(
        60 if sampler == "nsga2" else 12
    ):  # history: past TPE's and the GP's startup, NSGA-II's first generation
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, [arch.cost().params / 1e4 + i % 3, float(arch.cost().macs)])
    shadow = optuna.create_study(directions=directions, sampler=make_sampler(config, 7))
    shadow.add_trials(study.get_trials(deepcopy=False))
    for _ in range(3):
        candidate = shadow.ask()
        arch = space.sample(candidate)
        trial = study.ask()
        study.sampler.keep(trial.number, candidate.params)
        assert space.sample(trial) == arch and trial.params == candidate.params
        study.tell(trial, [0.5, 1.0])
        frozen = study.trials[-1]
        if sampler == "nsga2":
            assert frozen.system_attrs["NSGAIISampler:generation"] == 1  # past its first generation: crossover


@pytest.mark.parametrize(("pool", "message"), [(1, "screen.pool: 1 must be >= 2"), (100_000, "<= 256")])
def test_a_pool_outside_its_bound_exits_2_naming_the_key(tmp_path: Path, pool: int, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "space": "tiny", "screen": {"proxy": "params", "pool": pool}}))
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "search.py"), "--config", str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "screen.pool" in done.stderr and message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def _stopped(process: subprocess.Popen[str]) -> bool:
    """Whether ``process`` is stopped (``SIGSTOP``): state ``T`` in ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _search(root: Path, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1", **env}
    environ.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", "s.yaml", "--no-progress"]
    return subprocess.Popen(argv, cwd=root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_until_paused(worker: subprocess.Popen[str], timeout_s: float = 180) -> None:
    """Until ``worker`` stops itself at its pause point (it must not exit or take longer than ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not _stopped(worker):
        assert worker.poll() is None and time.monotonic() < deadline, "never reached its pause point"
        time.sleep(0.1)


def test_sigterm_while_screening_fails_the_one_trial_and_a_rerun_retries_it(
    in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM while the first trial screens its pool (stopped at the pause point after its first
    candidate): that trial fails as interrupted with its retry queued, no MLflow run is left RUNNING,
    the doctor finds the stores consistent, and a rerun ends with exactly n_trials counted trials.
    (Before: the pool's extra candidates were trials of their own, failed, and counted; the
    interrupted trial was not retried and its child run stayed RUNNING: the doctor found 2 problems.)"""
    study = quick_study("scr", n_trials=2, proxies=["params"], screen={"proxy": "params", "pool": 4})
    (in_tmp_dir / "s.yaml").write_text(yaml.safe_dump(study))
    worker = _search(in_tmp_dir, **{PAUSE_ENV: "screen-candidate"})
    try:
        _wait_until_paused(worker)
        os.kill(worker.pid, signal.SIGTERM)  # pending while stopped, delivered on SIGCONT
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 130, out[-3000:]
    storage = open_storage(str(in_tmp_dir / "runs" / "optuna.journal"))
    trials = optuna.load_study(study_name="scr", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING], out[-3000:]
    assert trials[0].user_attrs["fail_reason"] == "interrupted"
    client = MlflowClient(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    loaded = optuna.load_study(study_name="scr", storage=storage)
    assert not [r for r in _children(client, loaded) if r.info.status == "RUNNING"]
    capsys.readouterr()
    assert main(["doctor", "--study-name", "scr"]) == 0, capsys.readouterr().out

    rerun = _search(in_tmp_dir)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out[-3000:]
    loaded = optuna.load_study(study_name="scr", storage=storage)
    assert trial_counts(loaded) == (2, 0)
    trials = loaded.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].system_attrs.get("failed_trial") == 0, "the interrupted trial was retried"
    runs = _children(client, loaded)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert main(["doctor", "--study-name", "scr"]) == 0, capsys.readouterr().out


def test_the_study_timeout_is_checked_between_candidates(in_tmp_dir: Path) -> None:
    """A pool of 8 whose first candidate is scored (the worker stopped there) after the study's timeout
    has passed: the pool stops at that one, which the trial trains; then the study stops by its timeout.
    (Before: a pool ran to its end whatever the timeout: 100,000 candidates ran for hours.)"""
    timeout_s = 10
    study = quick_study("late", n_trials=2, timeout_s=timeout_s, proxies=["params"], screen={"pool": 8})
    (in_tmp_dir / "s.yaml").write_text(yaml.safe_dump(study))
    worker = _search(in_tmp_dir, **{PAUSE_ENV: "screen-candidate"})
    try:
        _wait_until_paused(worker)
        time.sleep(timeout_s + 1)  # stopped: the timeout, counted from before the pool, passes meanwhile
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    out, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, out[-3000:]
    assert "stopped by timeout at 1/2" in out, out[-3000:]
    storage = open_storage(str(in_tmp_dir / "runs" / "optuna.journal"))
    (trial,) = optuna.load_study(study_name="late", storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["screen.pool_size"] == 1
