"""Ablations: budget matching, paired statistics, the report, and real studies end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

import blocknas.blocks  # noqa: F401  (registers blocknet)
import blocknas.search.study.objective as objective_module
from blocknas.blocks import ArchConfig, ConfigError, list_blocks, parse
from blocknas.blocks.presets import family_preset
from blocknas.search.ablation import (
    AblationConfig,
    CellResult,
    build_variants,
    cost_measure,
    factor_rows,
    load_ablation_config,
    make_plan,
    match_width,
    mean_std,
    paired_difference,
    run_ablation,
    scale_widths,
    widths,
)
from blocknas.search.study import PLAN_ATTR
from blocknas.search.tracking import PARENT_RUN_ATTR, RUN_ID_ATTR, StudyTracker, diagnose, open_storage
from tests.conftest import REPO_ROOT
from tests.helpers.configs import ablation
from tests.helpers.mlflow import children

FAMILIES = ["standard", "separable", "reversed", "inverted_residual"]


# -- budget matching ----------------------------------------------------------------------


def test_scale_widths_rounds_to_multiples_of_8() -> None:
    arch = ArchConfig.from_dict({**family_preset("standard"), "head": {"num_features": 100}})
    assert scale_widths(arch, 1.0) is arch
    assert widths(scale_widths(arch, 1.37)) == (24, 32, 64, 128, 136)
    assert set(widths(scale_widths(arch, 0.01))) == {8}
    no_head = scale_widths(ArchConfig.from_dict(family_preset("standard")), 2.0)
    assert no_head.head.num_features == 0


@pytest.mark.parametrize("metric", ["params", "macs"])
@pytest.mark.parametrize("base_block", ["standard", "inverted_residual"])
def test_budget_match_hits_tolerance_for_every_block_family(base_block: str, metric: str) -> None:
    """Every family in the presets' skeleton lands within ±5 % of the base family's params / MACs."""
    config = parse(
        AblationConfig,
        {
            "name": "m",
            "base": family_preset("standard", expand_ratio=4.0),
            "factors": {"block": {"levels": FAMILIES, "base": base_block}},
            "match": {"metric": metric, "tolerance": 0.05},
        },
    )
    plan = make_plan(config, config.base_arch())
    measure = cost_measure(metric)
    target = measure(plan[0].arch)
    assert plan[0].is_base and plan[0].name == f"block={base_block}" and len(plan) == 4
    for variant in plan:
        assert variant.match is not None and variant.match.matched, variant.budget(metric)
        assert abs(measure(variant.arch) / target - 1) <= 0.05
        assert variant.match.achieved == measure(variant.arch)
        if variant.match.multiplier != 1:
            assert all(s.out_chs % 8 == 0 for s in variant.arch.stages) and variant.arch.stem.out_chs % 8 == 0


def test_budget_match_with_a_measured_cost() -> None:
    """Latency matching uses the same bisection on any increasing measure (here a made-up latency model)."""
    calls = []

    def fake_latency_ms(arch: ArchConfig) -> float:
        calls.append(arch)
        return 0.05 + 1e-7 * arch.macs() ** 1.1

    arch = ArchConfig.from_dict(family_preset("reversed"))
    target = 1.6 * fake_latency_ms(arch)
    match = match_width(arch, target, fake_latency_ms, tolerance=0.05, max_steps=8)
    assert match.matched and match.multiplier > 1
    assert match.evaluations == len(calls) - 1 <= 8  # distinct networks only


def test_unmatched_variant_is_reported_not_dropped() -> None:
    """Shrinking a standard conv to a small separable net's budget hits the 8-channel floor: reported, not hidden."""
    config = parse(
        AblationConfig,
        {
            "name": "m",
            "base": family_preset("separable"),
            "factors": {"block": {"levels": ["separable", "standard"]}},
            "match": "params",
            "on_unmatched": "skip",
        },
    )
    plan = make_plan(config, config.base_arch())
    assert [v.name for v in plan] == ["block=separable", "block=standard"]
    standard = plan[1]
    assert standard.match is not None and not standard.match.matched and not standard.trained
    text = standard.budget("params")
    assert text.startswith(f"not matched (achieved {standard.arch.params():,}, {standard.match.rel_error:+.1%})")
    assert text.endswith("not trained")
    assert plan[0].budget("params") == f"target ({plan[0].arch.params():,})"


# -- statistics ---------------------------------------------------------------------------


def test_paired_difference_matches_hand_computation() -> None:
    level = {0: 0.90, 1: 0.80, 2: 0.85, 7: 0.5}  # seed 7 has no partner: ignored
    base = {0: 0.80, 1: 0.75, 2: 0.80}
    diff = paired_difference(level, base)
    # differences 0.10, 0.05, 0.05: mean 1/15, std sqrt(((1/30)^2 + 2 (1/60)^2) / 2) = sqrt(1/1200),
    # t(0.975, 2 df) = 4.302653, half width = 4.302653 * sqrt(1/1200) / sqrt(3)
    mean, std, half = 1 / 15, math.sqrt(1 / 1200), 4.302653 * math.sqrt(1 / 1200) / math.sqrt(3)
    assert diff.n == 3
    assert diff.mean == pytest.approx(mean)
    assert diff.std == pytest.approx(std)
    assert (diff.low, diff.high) == pytest.approx((mean - half, mean + half), rel=1e-6)
    assert not diff.excludes_zero  # [-0.0051, 0.1384]
    assert paired_difference({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.7, 1: 0.6, 2: 0.66}).excludes_zero


def test_paired_difference_edge_cases() -> None:
    one = paired_difference({3: 0.9}, {3: 0.8})
    assert one.n == 1 and one.mean == pytest.approx(0.1) and not one.has_interval and math.isnan(one.low)
    assert not one.excludes_zero
    flat = paired_difference({0: 0.9, 1: 0.8}, {0: 0.8, 1: 0.7})
    assert (flat.low, flat.high) == pytest.approx((0.1, 0.1)) and flat.excludes_zero
    assert mean_std([0.5])[0] == 0.5 and math.isnan(mean_std([0.5])[1])


def test_factor_rows_grid_main_effect_and_one_at_a_time() -> None:
    """In a grid a level's per-seed accuracy averages over the other factor; one at a time it does not."""
    factors = {"block": {"levels": ["standard", "separable"]}, "kernel_size": {"levels": [3, 5]}}
    grid = ablation(factors=factors, match=None)
    plan = make_plan(grid, grid.base_arch())
    assert plan[0].name == "block=standard,kernel_size=3" and len(plan) == 4
    acc = {
        ("block=standard,kernel_size=3", 0): 0.80,
        ("block=standard,kernel_size=3", 1): 0.70,
        ("block=standard,kernel_size=5", 0): 0.90,
        ("block=standard,kernel_size=5", 1): 0.80,
        ("block=separable,kernel_size=3", 0): 0.60,
        ("block=separable,kernel_size=3", 1): 0.62,
        ("block=separable,kernel_size=5", 0): 0.70,
        ("block=separable,kernel_size=5", 1): 0.64,
    }
    cells = [CellResult(v, s, a, 1.0 + s, "COMPLETE") for (v, s), a in acc.items()]
    standard, separable = factor_rows(grid, plan, cells, "block")
    assert standard.is_base and standard.accuracy == pytest.approx({0: 0.85, 1: 0.75})
    assert separable.accuracy == pytest.approx({0: 0.65, 1: 0.63})
    assert separable.diff is not None and separable.diff.mean == pytest.approx(((0.65 - 0.85) + (0.63 - 0.75)) / 2)
    assert standard.latency_ms == pytest.approx(1.5)

    ofat = ablation(factors=factors, match=None, design="one_at_a_time")
    plan = make_plan(ofat, ofat.base_arch())
    assert [v.name for v in plan] == [
        "block=standard,kernel_size=3",
        "block=separable,kernel_size=3",
        "block=standard,kernel_size=5",
    ]
    standard, separable = factor_rows(ofat, plan, cells, "block")
    assert standard.accuracy == pytest.approx({0: 0.80, 1: 0.70})
    assert separable.diff is not None and separable.diff.mean == pytest.approx(((0.60 - 0.80) + (0.62 - 0.70)) / 2)


# -- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        (
            {"blok": {"levels": ["standard", "separable"]}},
            r"factors\.blok: unknown factor 'blok'; a factor is a stage field",
        ),
        ({"s0.colour": {"levels": [1, 2]}}, r"factors\.s0\.colour: unknown factor"),
        (
            {"kernel_size": {"levels": [3, 4]}},
            r"factors\.kernel_size\.levels\[1\]: '4' does not give a valid network: .*not odd",
        ),
        (
            {"block": {"levels": ["standard", "sepconv"]}},
            r"factors\.block\.levels\[1\]: 'sepconv' does not give .*separable",
        ),
        (
            {"s5.block": {"levels": ["standard", "separable"]}},
            r"factors\.s5\.block\.levels\[0\]: .*stage 5 does not exist",
        ),
        ({"block": {"levels": ["standard"]}}, r"factors\.block\.levels: a factor needs at least two levels"),
        ({"block": {"levels": ["standard", "standard"]}}, r"factors\.block\.levels\[1\]: 'standard' is listed twice"),
        (
            {"block": {"levels": ["standard", "reversed"], "base": "separable"}},
            r"factors\.block\.base: 'separable' is not one",
        ),
        ({"block": {"levles": ["standard", "reversed"]}}, r"factors\.block\.levles: unknown key"),
    ],
)
def test_bad_factor_names_and_levels_name_file_and_key(tmp_path: Path, factors: dict[str, Any], message: str) -> None:
    assert "separable" in list_blocks()
    path = tmp_path / "bad.yaml"
    config = ablation(factors={"block": {"levels": ["standard", "separable"]}}).to_dict()
    path.write_text(yaml.safe_dump({**config, "factors": factors}))
    with pytest.raises(ConfigError, match=rf"bad\.yaml: {message}"):
        loaded = load_ablation_config(path)
        build_variants(loaded, loaded.base_arch())


def test_other_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"match: 'flops' is not one of 'params', 'macs', 'latency'"):
        ablation(match="flops")
    with pytest.raises(ConfigError, match=r"seeds: 0 must be >= 1"):
        ablation(seeds=0)
    with pytest.raises(ConfigError, match=r"base: cannot resolve architecture 'nope.yaml'"):
        ablation(base="nope.yaml").base_arch()


def test_shipped_ablations_load_and_match() -> None:
    paths = sorted((REPO_ROOT / "configs" / "ablations").glob("*.yaml"))
    assert any(p.name == "seed_blocks.yaml" for p in paths)
    for path in paths:
        config = load_ablation_config(path)
        assert config.name == path.stem
        if config.matching is None or config.matching.metric != "latency":
            plan = make_plan(config, config.base_arch())
            assert all(v.match is None or v.match.matched for v in plan), path


# -- end to end ---------------------------------------------------------------------------


def test_ablation_end_to_end_and_resume(in_tmp_dir: Path) -> None:
    config = ablation()
    result = run_ablation(config, progress=False)
    study = result.study
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    cells = {(t.params["variant"], t.params["seed"]) for t in study.trials}
    assert cells == {(v, s) for v in ("block=standard", "block=separable") for s in (0, 1)}
    assert result.complete

    client = MlflowClient(result.tracking_uri)
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    assert client.get_run(parent_id).data.tags["blocknas.kind"] == "ablation"
    runs = {r.info.run_id: r for r in children(client, parent_id)}
    assert len(runs) == 4
    for trial in study.trials:
        run = runs[trial.user_attrs[RUN_ID_ATTR]]
        assert run.info.status == "FINISHED"
        assert run.data.tags["ablation.block"] == trial.params["variant"].removeprefix("block=")
        assert run.data.tags["ablation.seed"] == str(trial.params["seed"])
        assert run.data.metrics["accuracy"] == pytest.approx(trial.values[0])
    separable = next(v for v in result.plan if v.name == "block=separable")
    assert separable.match is not None and separable.match.matched and separable.match.multiplier > 1
    trained = [
        ArchConfig.from_dict(t.user_attrs["arch"]) for t in study.trials if t.params["variant"] == separable.name
    ]
    assert all(a == separable.arch for a in trained)

    report = config.report_dir
    names = {"report.md", "factors.csv", "variants.csv", "cells.csv", "accuracy_vs_latency.png"}
    assert {p.name for p in report.iterdir()} == names
    markdown = (report / "report.md").read_text()
    assert "## block (base level: standard)" in markdown and "| separable | 2 |" in markdown and "matched (" in markdown
    assert {a.path for a in client.list_artifacts(parent_id, "report")} == {f"report/{n}" for n in names}
    assert client.get_run(parent_id).info.status == "FINISHED"

    resumed = run_ablation(config, progress=False)
    assert len(resumed.study.trials) == 4
    assert resumed.parent_run_id == parent_id and len(children(client, parent_id)) == 4


def test_an_ablation_stopped_by_its_timeout_ends_its_parent_run_saying_why(in_tmp_dir: Path) -> None:
    """As a search's does: KILLED with the reason in blocknas.stopped, and a rerun finishes and reopens it."""
    stopped = run_ablation(ablation(timeout_s=1e-6), progress=False)  # past its deadline before the first cell
    assert not stopped.complete
    client = MlflowClient(stopped.tracking_uri)
    parent = client.get_run(stopped.parent_run_id)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["blocknas.stopped"].startswith("stopped by timeout at 0/")
    resumed = run_ablation(ablation(), progress=False)
    assert resumed.complete and resumed.parent_run_id == stopped.parent_run_id
    parent = client.get_run(resumed.parent_run_id)
    assert parent.info.status == "FINISHED" and "blocknas.stopped" not in parent.data.tags

    with pytest.raises(ConfigError, match=r"started with other variants or seeds .*it has seeds \[0, 1\]"):
        run_ablation(ablation(seeds=[1]), progress=False)  # a seed removed
    with pytest.raises(ConfigError, match="started with other variants or seeds"):
        run_ablation(ablation(factors={"block": {"levels": ["standard", "reversed"]}}, seeds=3), progress=False)
    with pytest.raises(ConfigError, match=r"defined with other settings, .*: train.epochs: 1 -> 2\. Restore"):
        run_ablation(ablation(train={"epochs": 2, "batch_size": 256}), progress=False)


def test_an_ablation_grows_by_seeds_and_keeps_its_matched_variants(in_tmp_dir: Path) -> None:
    """Measure the seed spread first, then add seeds: only the new cells train, on the stored plan's widths."""
    first = run_ablation(ablation(seeds=1), progress=False)
    plan = first.study.user_attrs[PLAN_ATTR]
    grown = run_ablation(ablation(seeds=[0, 5, 7]), progress=False)
    trials = grown.study.trials
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert trials[:2] == first.study.trials[:2], "the first run's cells are kept, not rerun"
    assert {c.seed for c in grown.cells} == {0, 5, 7} and all(c.accuracy is not None for c in grown.cells)
    assert grown.study.user_attrs[PLAN_ATTR] == plan, "the variants (and a latency match's widths) are kept"
    assert "| separable | 3 |" in (ablation().report_dir / "report.md").read_text()
    assert len(run_ablation(ablation(seeds=[0, 5, 7]), progress=False).study.trials) == 6  # a plain resume
    assert len(run_ablation(ablation(seeds=[0, 5, 7, 9]), progress=False).study.trials) == 8  # grown twice


def test_latency_matched_ablation_measures_real_networks(in_tmp_dir: Path) -> None:
    """``match: latency`` bisects on real ONNX Runtime measurements; the plan is stored, so a rerun measures nothing."""
    config = ablation(match={"metric": "latency", "tolerance": 0.25, "max_steps": 4}, seeds=1)
    result = run_ablation(config, progress=False)
    assert result.complete and len(result.cells) == 2
    base, separable = (next(v for v in result.plan if v.name == f"block={b}") for b in ("standard", "separable"))
    assert (base.is_base and base.match is None) or base.match.multiplier == 1.0
    match = separable.match
    assert match is not None and 1 <= match.evaluations <= 4
    assert match.target > 0 and match.achieved > 0  # measured milliseconds, not a formula
    assert separable.arch == ArchConfig.from_dict(
        next(t for t in result.study.trials if t.params["variant"] == separable.name).user_attrs["arch"]
    )
    verdict = "matched (" if match.matched else "not matched ("
    assert verdict in result.markdown

    rerun = run_ablation(config, progress=False)
    assert [v.match for v in rerun.plan] == [v.match for v in result.plan]  # read back, not re-measured
    assert len(rerun.study.trials) == 2


@pytest.mark.usefixtures("mlflow_store")  # a migrated store: the workers skip MLflow's migrations
def test_two_processes_share_one_ablation(tmp_path: Path) -> None:
    """Two terminals running the same ablation: every cell done, one parent run, Optuna and MLflow agree."""
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump(ablation().to_dict()))
    command = [sys.executable, str(REPO_ROOT / "scripts" / "ablate.py"), "--config", str(path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    study = optuna.load_study(study_name="abl", storage=open_storage(str(tmp_path / "runs" / "optuna.journal")))
    done = {
        (t.params["variant"], t.params["seed"]) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert done == {(v, s) for v in ("block=standard", "block=separable") for s in (0, 1)}
    tracker = StudyTracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", "abl")
    parents = tracker.client.search_runs([tracker.experiment_id], "tags.`blocknas.role` = 'study'")
    assert [r.info.run_id for r in parents] == [study.user_attrs[PARENT_RUN_ATTR]]
    diagnosis = diagnose(study, tracker)
    assert diagnosis.ok, diagnosis.problems
    assert "| separable | 2 |" in (tmp_path / "runs" / "abl" / "report" / "report.md").read_text()


def test_interrupted_ablation_reruns_only_unfinished_cells(in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_train = objective_module.train_briefly
    trained: list[tuple[str, int]] = []  # (block of the trained network, seed it was trained with)

    def counting_train(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        separable = any(type(m).__name__ == "SeparableConv" for m in model.modules())
        trained.append(("separable" if separable else "standard", kwargs["seed"]))
        if len(trained) == 3 and interrupt:
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(objective_module, "train_briefly", counting_train)
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        run_ablation(ablation(), progress=False)
    interrupt = False
    first = optuna.load_study(study_name="abl", storage=open_storage("runs/optuna.journal"))
    done_before = {t.number: t.values for t in first.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(done_before) == 2

    result = run_ablation(ablation(), progress=False)
    assert len(trained) == 5  # 2 finished + 1 interrupted, then the interrupted cell and the one never started
    assert result.complete and all(c.accuracy is not None for c in result.cells)
    for number, values in done_before.items():
        assert result.study.trials[number].values == values
    assert all(c.trial != 2 for c in result.cells)  # trial 2 was interrupted; its cell's result is the rerun
    # every cell trained its own variant with its own seed (the seed fixes init and data order)
    cells = sorted(("separable" if "separable" in c.variant else "standard", c.seed) for c in result.cells)
    assert (
        sorted(trained[:2] + trained[3:])
        == cells
        == sorted({(v, s) for v in ("standard", "separable") for s in (0, 1)})
    )
