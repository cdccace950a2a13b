"""``pruner: pareto_asha``: the ranking, a real multi-objective study, shared rungs across processes, resume."""

from __future__ import annotations

import json
import math
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from blocknas.blocks import ConfigError, parse, register_block
from blocknas.search.cli import main
from blocknas.search.study import (
    DUPLICATE_OF_ATTR,
    PRUNED_BY,
    ParetoAsha,
    PruningConfig,
    RungPoint,
    RungRow,
    StudyConfig,
    crowding_distances,
    front_trials,
    non_dominated_fronts,
    rank_points,
    run_search,
    rung_accuracy_attr,
    rung_table,
    trial_counts,
)
from blocknas.search.tracking import RUN_ID_ATTR, StudyTracker, diagnose, open_storage
from tests.conftest import load_benchmark, ran
from tests.helpers.blocks import ZeroedConv
from tests.helpers.configs import tiny_arch, tiny_config
from tests.helpers.mlflow import children
from tests.helpers.workers import finish, states, wait_for, worker, write_config

PRUNE = {"min_epochs": 1, "reduction_factor": 3, "min_trials_per_rung": 4}


def ids(points: list[RungPoint]) -> list[int]:
    return [p.trial for p in points]


def test_non_dominated_sort_peels_fronts() -> None:
    points = [RungPoint(0, 0.9, 2.0), RungPoint(1, 0.8, 1.0), RungPoint(2, 0.7, 1.5), RungPoint(3, 0.6, 3.0)]
    fronts = non_dominated_fronts(points)
    assert [ids(f) for f in fronts] == [[0, 1], [2], [3]]


def test_latencies_within_the_noise_are_ties() -> None:
    fast_but_worse, slow_but_better = RungPoint(0, 0.80, 1.00), RungPoint(1, 0.90, 1.01)
    assert [ids(f) for f in non_dominated_fronts([fast_but_worse, slow_but_better])] == [[0, 1]]
    # 1 % apart is within a 2 % measurement precision: the same latency, so accuracy decides.
    assert [ids(f) for f in non_dominated_fronts([fast_but_worse, slow_but_better], 0.02)] == [[1], [0]]
    equal = [RungPoint(0, 0.8, 1.0), RungPoint(1, 0.8, 1.015)]
    assert [ids(f) for f in non_dominated_fronts(equal, 0.02)] == [[0, 1]], "tied on both: neither dominates"


def test_crowding_distance_breaks_ties_within_a_front() -> None:
    front = [RungPoint(0, 0.5, 1.0), RungPoint(1, 0.6, 2.0), RungPoint(2, 0.61, 2.05), RungPoint(3, 0.62, 2.1)]
    front.append(RungPoint(4, 0.9, 5.0))
    distances = crowding_distances(front)
    assert distances[0] == distances[4] == math.inf, "the front's extremes first"
    assert distances[2] < distances[1] < distances[3], "trial 2 sits in a crowd, trial 3 next to a gap"
    assert ids(rank_points(front)) == [4, 0, 3, 1, 2], "extremes (higher accuracy first), then the less crowded"
    assert crowding_distances(front[:2]) == [math.inf, math.inf]


def asha(**settings: int) -> ParetoAsha:
    return ParetoAsha(PruningConfig(**{**PRUNE, **settings}), epochs=9, time_budget_s=None, tie_rel=0.02)


class FakeTrial:
    """What :meth:`ParetoAsha.decide` uses of a trial: number, user attrs, and its study's trials."""

    def __init__(self, number: int, study: FakeStudy) -> None:
        self.number, self.study = number, study
        self.user_attrs: dict[str, Any] = {"latency_ms": 0.0}
        self.state = TrialState.RUNNING

    def set_user_attr(self, key: str, value: object) -> None:
        self.user_attrs[key] = value


class FakeStudy:
    def __init__(self) -> None:
        self.trials: list[FakeTrial] = []

    def get_trials(self, deepcopy: bool = False) -> list[FakeTrial]:
        return self.trials

    def add(self, accuracy: float, latency_ms: float) -> FakeTrial:
        trial = FakeTrial(len(self.trials), self)
        trial.user_attrs.update({"latency_ms": latency_ms, rung_accuracy_attr(0): accuracy})
        self.trials.append(trial)
        return trial


def decide(pruner: ParetoAsha, study: FakeStudy, accuracy: float, latency_ms: float) -> bool:
    trial = FakeTrial(len(study.trials), study)
    trial.user_attrs["latency_ms"] = latency_ms
    study.trials.append(trial)
    decision = pruner.decide(trial, 0, 1, accuracy, latency_ms)  # type: ignore[arg-type]
    assert trial.user_attrs[rung_accuracy_attr(0)] == accuracy, "recorded before deciding"
    return decision.go_on


def test_top_one_over_eta_go_on_after_the_minimum_count() -> None:
    study = FakeStudy()
    pruner = asha(min_trials_per_rung=4)
    assert [decide(pruner, study, 0.1 * i, 1.0) for i in (1, 2, 3)] == [True] * 3, "fewer than 4: all go on"
    assert not decide(pruner, study, 0.05, 1.0), "4th, worst: outside the top ⌈4/3⌉ = 2"
    assert decide(pruner, study, 0.5, 1.0), "5th, best: inside the top ⌈5/3⌉ = 2"
    assert not decide(pruner, study, 0.25, 1.0), "6th, rank 3 of 6: outside the top 2"
    assert decide(pruner, study, 0.01, 0.1), "most accurate of none, but the fastest: on the first front"
    assert decide(pruner, study, 0.45, 1.005), "rank 3 of 8 (0.5 ties its latency and beats it): top ⌈8/3⌉ = 3"
    decisions = [t.user_attrs["rung_0_decision"] for t in study.trials]
    assert [(d["n"], d["keep"]) for d in decisions] == [(1, 1), (2, 2), (3, 3), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3)]


def test_failed_trials_do_not_count_at_a_rung() -> None:
    study = FakeStudy()
    for accuracy in (0.9, 0.8, 0.7):
        study.add(accuracy, 1.0)
    study.trials[0].state = TrialState.FAIL
    pruner = asha(min_trials_per_rung=4)
    assert decide(pruner, study, 0.1, 1.0), "3 counted (the failed one left out): below the minimum"


def test_rungs_in_epochs_and_in_time() -> None:
    assert PruningConfig().rung_epochs(27) == [1, 3, 9], "27, the full budget, is no stopping point"
    assert PruningConfig(min_epochs=2, reduction_factor=2).rung_epochs(9) == [2, 4, 8]
    by_epochs = ParetoAsha(PruningConfig(), epochs=9, time_budget_s=None, tie_rel=0.0)
    assert [by_epochs.rungs_reached(e, 1e9) for e in (1, 2, 3, 9)] == [[0], [0], [0, 1], []]
    # time_budget_s: rung k at the same fraction (1/9, 3/9) of 90 s, or at its epoch count, whichever first.
    by_time = ParetoAsha(PruningConfig(), epochs=9, time_budget_s=90.0, tie_rel=0.0)
    assert by_time.rungs_reached(1, 5.0) == [0], "1 epoch"
    assert by_time.rungs_reached(1, 10.0) == [0]
    assert by_time.rungs_reached(1, 31.0) == [0, 1], "past 30 s after one long epoch: both rungs"
    assert by_time.rungs_reached(1, 95.0) == [], "the time budget is spent: the full budget"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objective": "accuracy", "pruner": "pareto_asha"}, "pruner: pareto_asha ranks accuracy against latency"),
        ({"pruner": "pareto_asha", "pruning": {"reduction_factor": 1}}, "pruning.reduction_factor: 1 must be >= 2"),
        ({"pruner": "pareto_asha", "pruning": {"min_epochs": 4}}, "pruning.min_epochs: 4 leaves no rung"),
        ({"pruner": "none", "pruning": {"min_epochs": 2}}, "pruning: settings for pruner: pareto_asha"),
        ({"pruner": "hyperband"}, "pruner: hyperband cannot prune a multi-objective study"),
        ({"pruner": "median"}, "pruner: median cannot prune a multi-objective study"),
    ],
    ids=[
        "single_objective",
        "eta_below_2",
        "min_epochs_over_budget",
        "settings_without_the_pruner",
        "hyperband_multi",
        "median_multi",
    ],
)
def test_bad_settings_exit_2_and_write_nothing(
    settings: dict, message: str, bare_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(bare_tmp_dir, "bad", n_trials=2, **{"train": {"epochs": 3}, **settings})
    assert main(["search", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.yaml" in err, err
    assert not (bare_tmp_dir / "runs").exists(), "nothing written"


def test_pruning_settings_parse_and_keep_the_old_pruner_strings() -> None:
    config = parse(StudyConfig, {"name": "x", "pruner": "pareto_asha", "pruning": {"reduction_factor": 2}})
    assert config.pruning == PruningConfig(reduction_factor=2)
    assert config.with_overrides(n_trials=3).pruning == config.pruning
    for name in ("median", "hyperband", "none"):
        assert parse(StudyConfig, {"name": "x", "objective": "accuracy", "pruner": name}).pruner == name
    # auto (the default) is the pruner that can act: median on one objective, none on two
    assert parse(StudyConfig, {"name": "x", "objective": "accuracy"}).pruner == "median"
    assert parse(StudyConfig, {"name": "x"}).pruner == "none"
    with pytest.raises(ConfigError, match="latency_tie_rel"):
        PruningConfig(latency_tie_rel=1.5)


@pytest.mark.usefixtures("isolated_registry")
def test_hopeless_architectures_stop_at_the_first_rung(in_tmp_dir: Path) -> None:
    """Three ordinary networks reach the full budget; two whose output is zero, stop at rung 0.

    The dead ones are 8-12× wider than the good ones (60-140× their multiply-adds), so they are
    slower by far more than latency noise on a loaded machine: dominated, not Pareto extremes.
    At 3-4× the width they were sometimes measured faster than a good one under CI load.
    """
    register_block("zeroed")(ZeroedConv)
    good = [("standard", "standard"), ("separable", "standard"), ("standard", "inverted_residual")]
    baselines = [tiny_arch(in_tmp_dir / f"good{i}.yaml", *blocks) for i, blocks in enumerate(good)]
    for i in range(2):
        path = in_tmp_dir / f"dead{i}.yaml"
        tiny_arch(path, "standard", "zeroed")
        arch = yaml.safe_load(path.read_text())
        for stage in arch["stages"]:
            stage["out_chs"] = 128 + 64 * i
        path.write_text(yaml.safe_dump(arch))
        baselines.append(str(path))
    config = tiny_config(
        train={"epochs": 2, "batch_size": 32}, pruner="pareto_asha", pruning=PRUNE, baselines=baselines, n_trials=5
    )
    result = run_search(config, progress=False)
    study = result.study
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED] * 2
    assert trial_counts(study) == (5, 0)
    for dead in trials[3:]:
        assert dead.user_attrs["pruned_by"] == PRUNED_BY
        assert (dead.user_attrs["pruned_rung"], dead.user_attrs["pruned_at_epoch"]) == (0, 1)
        assert dead.user_attrs["pruned_accuracy"] == dead.user_attrs["rung_0_accuracy"] < 0.25
        assert not dead.values and dead.user_attrs["latency_ms"] > max(t.user_attrs["latency_ms"] for t in trials[:3])
    assert [t.user_attrs["rung_0_decision"]["continue"] for t in trials] == [True] * 3 + [False] * 2
    assert {t.number for t in front_trials(study)} <= {0, 1, 2}
    assert rung_table(trials) == [RungRow(rung=0, epochs=(1,), entered=5, went_on=3)]

    client = MlflowClient(result.tracking_uri)
    assert len(children(client, result.parent_run_id)) == 5
    for trial in trials:
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.info.status == "FINISHED"
        curve = client.get_metric_history(run.info.run_id, "epoch_val_accuracy")
        rung = client.get_metric_history(run.info.run_id, "rung_accuracy")
        assert [(m.step, m.value) for m in rung] == [(0, pytest.approx(trial.user_attrs["rung_0_accuracy"]))]
        if trial.state == TrialState.PRUNED:
            assert run.data.tags["blocknas.state"] == "pruned"
            assert run.data.tags["blocknas.pruned_by"] == PRUNED_BY
            assert run.data.tags["blocknas.pruned_at_epoch"] == "1"
            assert len(curve) == 1 and "accuracy" not in run.data.metrics
        else:
            assert run.data.tags["blocknas.state"] == "complete" and len(curve) == 2
    diagnosis = diagnose(study, StudyTracker(result.tracking_uri, config.name))
    assert diagnosis.ok, diagnosis.problems

    from blocknas.search.report import write_report

    report = write_report(study, in_tmp_dir / "report", tracker=StudyTracker(result.tracking_uri, config.name))
    text = report.markdown.read_text()
    assert "| rung | epochs | entered | went on |\n|---:|---:|---:|---:|\n| 0 | 1 | 5 | 3 |\n" in text, text


def _shared_rung_config(tmp_path: Path, name: str) -> Path:
    return write_config(
        tmp_path,
        name,
        n_trials=4,
        train={"epochs": 2, "batch_size": 128},
        pruner="pareto_asha",
        pruning={**PRUNE, "min_trials_per_rung": 2},
    )


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
@pytest.mark.parametrize("storage_kind", ["journal", pytest.param("postgres", marks=pytest.mark.services)])
def test_two_processes_prune_against_each_others_rungs(
    tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest
) -> None:
    if storage_kind == "journal":
        storage = str(tmp_path / "runs" / "optuna.journal")
    else:
        storage = request.getfixturevalue("postgres_url")
    name = f"shared-{uuid.uuid4().hex[:8]}"
    config = _shared_rung_config(tmp_path, name)
    procs = [worker(config, "--storage", storage, cwd=tmp_path) for _ in range(2)]
    for proc in procs:
        finish(proc)
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = ran(study.get_trials())
    assert trial_counts(study) == (4, 0) and len(trials) == 4
    by_worker = {t.number: t.user_attrs["blocknas.worker"] for t in trials}
    assert len(set(by_worker.values())) == 2, "both workers ran trials"
    # a trial drawing an architecture already trained takes its result and trains nothing (no rungs)
    trained = [t for t in trials if t.user_attrs.get(DUPLICATE_OF_ATTR) is None]
    assert all(rung_accuracy_attr(0) in t.user_attrs for t in trained), "every trained trial recorded rung 0"

    def own_before(trial: optuna.trial.FrozenTrial) -> int:
        return sum(by_worker[t.number] == by_worker[trial.number] for t in trained if t.number < trial.number)

    # A worker runs one trial at a time, so records it counted beyond its own earlier ones are the other's.
    counted_other = [t.number for t in trained if t.user_attrs["rung_0_decision"]["n"] > own_before(t) + 1]
    assert counted_other, [t.user_attrs["rung_0_decision"] for t in trained]
    for trial in trained:
        assert (trial.state == TrialState.PRUNED) == (not trial.user_attrs["rung_0_decision"]["continue"])
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", name)
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
def test_sigkill_mid_rung_keeps_the_rung_record_and_resumes(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'runs' / 'optuna.db'}"
    name = "killed"
    config = write_config(
        tmp_path, name, n_trials=1, train={"epochs": 6, "batch_size": 64}, pruner="pareto_asha",
        pruning={"min_epochs": 1, "reduction_factor": 2},
    )  # fmt: skip
    proc = worker(config, "--storage", storage, cwd=tmp_path)

    def past_rung_0() -> bool:
        return any(
            t.state == TrialState.RUNNING and rung_accuracy_attr(0) in t.user_attrs for t in states(storage, name)
        )

    wait_for(past_rung_0, what="a running trial past rung 0")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed = [t for t in states(storage, name) if t.state == TrialState.RUNNING]
    assert len(killed) == 1 and rung_accuracy_attr(0) in killed[0].user_attrs, "the record survived the kill"
    recorded = killed[0].user_attrs[rung_accuracy_attr(0)]

    finish(worker(config, "--storage", storage, cwd=tmp_path))
    trials = states(storage, name)
    dead = trials[killed[0].number]
    assert dead.state == TrialState.FAIL and dead.user_attrs[rung_accuracy_attr(0)] == recorded
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs[rung_accuracy_attr(0)] == pytest.approx(recorded), "same seed: same rung accuracy"
    assert retry[0].user_attrs["rung_0_decision"]["n"] == 1, "the failed trial's record is not counted twice"
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    assert trial_counts(study) == (1, 0)
    diagnosis = diagnose(study, StudyTracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", name))
    assert diagnosis.ok, diagnosis.problems


def _replay_networks(informative: bool, n: int = 30) -> list:
    """Networks whose first epochs rank like their last (informative) or in reverse; latency shuffled."""
    replay = load_benchmark("asha_replay")
    rng = np.random.default_rng(0)
    finals = rng.uniform(0.80, 0.90, n)
    latencies = rng.uniform(1.0, 2.0, n)
    nets = []
    for final, latency in zip(finals, latencies):
        early = final if informative else 1.7 - final  # anti-correlated: the worst look best early
        curve = tuple([early - 0.1] * 9 + [final])
        nets.append(replay.Network(curve, float(latency), epoch_s=1.0))
    return nets


def test_asha_replay_pays_where_early_epochs_rank_like_the_last() -> None:
    replay = load_benchmark("asha_replay")
    pruning = PruningConfig(min_epochs=1, reduction_factor=3)
    good = replay.replay(_replay_networks(informative=True), pruning, orders=40)
    bad = replay.replay(_replay_networks(informative=False), pruning, orders=40)
    assert good["ratio_median"] < 0.8
    assert bad["ratio_median"] > 1.0  # it stops the networks that make the front
    assert good["reached"] > bad["reached"]


MULTIFIDELITY_TINY = [
    *("--data digits --space tiny --max-train-samples 300 --max-val-samples 200 --epochs 2 --min-epochs 1").split(),
    *("--eta 2 --seeds 1 --arms tpe,tpe+asha --target plain --budget-s 3").split(),
]


def test_multifidelity_runs_both_arms_once_and_resumes_with_what_is_left(tmp_path: Path) -> None:
    bench = load_benchmark("multifidelity")
    out, workdir = tmp_path / "mf.md", tmp_path / "wd"
    argv = [*MULTIFIDELITY_TINY, "--workdir", str(workdir), "--out", str(out)]
    assert bench.main(argv) == 0
    report = out.read_text()
    assert "| tpe | 0 |" in report and "| tpe+asha | 0 |" in report and "ratio to plain" in report
    assert "## Replay on the plain run's own curves" in report  # the replay's prediction beside the real run
    runs = {r["arm"]: r for r in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert set(runs) == {"tpe", "tpe+asha"} and all(r["complete"] for r in runs.values())
    clocks = [point[0] for point in runs["tpe"]["complete"]]
    assert clocks == sorted(clocks) and clocks[0] > 0  # trial time, in trial order

    args = bench.parse_args(argv)
    config = bench.study_config(args, "tpe", 0, 3.0, workdir)
    before = len(bench.load_run(config).trials)
    assert bench.main(argv) == 0  # both runs are done: nothing trains again
    assert len(bench.load_run(config).trials) == before

    kept = bench.load_run(config).trials
    bench.run_arm(args, "tpe", 0, 6.0, workdir)  # a run cut short resumes with what is left of its budget
    trials = bench.load_run(config).trials
    assert len(trials) > before and trials[:before] == kept
    spent, added = (sum(bench.trial_seconds(t) for t in part) for part in (kept, trials[before:]))
    assert 0 < added <= 6.0 - spent + max(bench.trial_seconds(t) for t in trials)  # not a fresh 6 s


def test_multifidelity_refuses_bad_arms() -> None:
    bench = load_benchmark("multifidelity")
    with pytest.raises(SystemExit):
        bench.parse_args(["--arms", "tpe,hyperband"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--arms", "tpe+asha", "--target", "plain"])
