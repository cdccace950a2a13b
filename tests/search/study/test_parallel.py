"""Every core by default (``parallel:``) and the GP sampler, on real studies and real worker processes."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest
import yaml

from blocknas.blocks import ArchConfig
from blocknas.search.cli import main
from blocknas.search.study import (
    ARCH_ATTR,
    DUPLICATE_OF_ATTR,
    ParallelPlan,
    load_study_config,
    plan_parallel,
    run_search,
    trial_counts,
)
from blocknas.search.tracking import WORKER_ATTR, open_storage
from tests.conftest import REPO_ROOT, ran

TINY = {
    "space": "tiny",
    "data": {"name": "digits"},
    "train": {"epochs": 1, "batch_size": 128, "threads": 1},
    "latency": {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},
    "sampler": "random",
}


def write_config(folder: Path, name: str, **overrides: object) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, **TINY, **overrides}))
    return path


@pytest.mark.parametrize(
    ("parallel", "n_trials", "threads", "cores", "env", "workers", "threads_each"),
    [
        ("auto", 30, 1, 2, {}, 2, 1),  # the default study on a 2-core machine: both cores
        ("auto", 30, None, 2, {}, 2, 1),  # threads not pinned: one per trial
        ("auto", 30, 2, 2, {}, 1, 2),  # two threads a trial fill the machine alone
        ("auto", 30, 2, 8, {}, 4, 2),
        ("auto", 30, 3, 8, {}, 2, 3),  # 3 × 2 <= 8; a third would make 9
        ("auto", 30, None, 16, {}, 16, 1),
        ("auto", 3, 1, 16, {}, 3, 1),  # never more workers than trials
        ("auto", 30, None, 3, {}, 3, 1),
        ("auto", 30, 1, 1, {}, 1, 1),  # one core: today's single process
        ("auto", 30, 4, 2, {}, 1, 4),  # more threads than cores: still one worker, as configured
        ("auto", 30, 1, 8, {"BLOCKNAS_PARALLEL": "1"}, 1, 1),  # the environment decides auto
        ("auto", 30, None, 8, {"BLOCKNAS_PARALLEL": "2"}, 2, 4),
        (1, 30, None, 8, {}, 1, 8),  # one worker may use every core
        (2, 30, None, 8, {"BLOCKNAS_PARALLEL": "1"}, 2, 4),  # an explicit number beats the environment
        (2, 1, 1, 8, {}, 1, 1),
    ],
)
def test_plan_keeps_threads_times_workers_within_the_cores(
    parallel: int | str, n_trials: int, threads: int | None, cores: int, env: dict[str, str], workers: int,
    threads_each: int,
) -> None:  # fmt: skip
    plan = plan_parallel(parallel, n_trials=n_trials, threads=threads, cores=cores, env=env)  # type: ignore[arg-type]
    assert (plan.workers, plan.threads, plan.cores) == (workers, threads_each, cores)
    assert plan.workers <= n_trials
    if threads is None or threads <= cores:
        assert plan.workers * plan.threads <= cores
        assert not plan.oversubscribed


def test_an_explicit_number_may_oversubscribe_and_says_so() -> None:
    plan = plan_parallel(4, n_trials=30, threads=1, cores=2, env={})
    assert plan == ParallelPlan(4, 1, 2, "parallel: 4") and plan.oversubscribed


def test_the_default_study_uses_every_core() -> None:
    config = load_study_config(REPO_ROOT / "configs" / "default.yaml")
    assert config.parallel == "auto" and config.train.threads == 1
    plan = plan_parallel(config.parallel, n_trials=config.n_trials, threads=config.train.threads, cores=2, env={})
    assert (plan.workers, plan.threads) == (2, 1)


@pytest.mark.parametrize(
    ("flags", "setting", "env", "message"),
    [
        ([], "two", None, "parallel: 'two' (str) matches none of: 'auto', int"),
        ([], 0, None, "parallel: 0 must be >= 1"),
        ([], None, "lots", "BLOCKNAS_PARALLEL: 'lots' is not a number of workers: give auto, or 1 to 256"),
        (["--parallel", "0"], None, None, "argument --parallel: 0: give auto or a number of workers (1 or more)"),
        (["--parallel", "many"], None, None, "give auto or a number of workers"),
    ],
)
def test_bad_parallel_is_one_error_and_writes_nothing(
    flags: list[str], setting: object, env: str | None, message: str, bare_tmp_dir: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    config = write_config(bare_tmp_dir, "bad", **({} if setting is None else {"parallel": setting}))
    if env is not None:
        monkeypatch.setenv("BLOCKNAS_PARALLEL", env)
    else:
        monkeypatch.delenv("BLOCKNAS_PARALLEL")
    with pytest.raises(SystemExit) if flags else contextlib.nullcontext():
        assert main(["search", "--config", str(config), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (bare_tmp_dir / "runs").exists()


def test_parallel_search_runs_two_workers_to_exactly_n_trials(tmp_path: Path) -> None:
    """``blocknas search --parallel 2``: one study, two processes, n_trials trained once each, one summary."""
    n_trials = 6
    config = write_config(tmp_path, "par", n_trials=n_trials, seed=3)
    done = subprocess.run(
        [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--parallel", "2",
         "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 trials at once (parallel: 2), 1 training thread(s) each" in done.stdout
    assert done.stdout.count("Exported:") == 1, "one summary, from the first worker once both are done"
    study = optuna.load_study(study_name="par", storage=open_storage(str(tmp_path / "runs" / "optuna.journal")))
    trials = ran(study.get_trials())
    assert trial_counts(study) == (n_trials, 0)
    assert len(trials) == n_trials, [t.state for t in trials]
    assert "starting 1 workers with 1 thread(s) each" in done.stdout, "the second worker was started"
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) <= 2  # a tiny study may end before the second starts
    trained = [ArchConfig.from_dict(t.user_attrs[ARCH_ATTR]).short_hash() for t in trials if _trained(t)]
    assert trained and not [h for h, n in Counter(trained).items() if n > 1], "an architecture was trained twice"


def _trained(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get(DUPLICATE_OF_ATTR) is None and ARCH_ATTR in trial.user_attrs


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_gp_sampler_searches_within_the_budgets(in_tmp_dir: Path) -> None:
    config = load_study_config(write_config(in_tmp_dir, "gp", sampler="gp", n_trials=8, constraints={"params": 5000}))
    result = run_search(config, progress=False)
    sampler = result.study.sampler
    assert isinstance(sampler, optuna.samplers.GPSampler)
    complete = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) >= 3 and all(set(t.constraints) == {"params"} for t in complete)
    # past its 2 startup trials the GP modelled the budget (Optuna keeps the constraint's GP it fitted)
    assert sampler._constraints_gprs_cache_list is not None


def test_a_parallel_search_reports_bad_input_once(tmp_path: Path) -> None:
    """The first worker checks the study before the others touch it: one paragraph, exit 2, no worker left."""
    config = write_config(tmp_path, "bad", data={"name": "imagefolder", "root": "nope"}, n_trials=4)
    done = subprocess.run(
        [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--parallel", "2",
         "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("error:") == 1 and "nope" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "interrupted" not in done.stderr
    assert not (tmp_path / "runs" / "optuna.journal").exists()
