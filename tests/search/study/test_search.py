"""The search end to end: real Optuna studies, real MLflow SQLite stores, real training."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import timm
import torch
import yaml
from mlflow.tracking import MlflowClient

import blocknas.blocks  # noqa: F401  (registers blocknet)
from blocknas.blocks import ArchConfig, ConfigError, get_block, register_block, resolve_arch
from blocknas.search.study import load_study_config, open_study, run_search, trial_counts
from blocknas.search.tracking import PARENT_RUN_ATTR, RUN_ID_ATTR
from blocknas.search.tracking.names import STATE_DIVERGED, STATE_TAG
from tests.conftest import REPO_ROOT
from tests.helpers.blocks import ZeroedConv
from tests.helpers.configs import tiny_arch, tiny_config
from tests.helpers.mlflow import children


def test_study_end_to_end_and_resume(in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    result = run_search(config, progress=False)
    study = result.study
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    client = MlflowClient(result.tracking_uri)
    parent_id = study.user_attrs[PARENT_RUN_ATTR]
    assert parent_id == result.parent_run_id
    runs = children(client, parent_id)
    assert len(runs) == 4
    by_id = {r.info.run_id: r for r in runs}
    for trial in study.trials:
        run = by_id[trial.user_attrs[RUN_ID_ATTR]]
        assert run.data.tags["optuna.trial_number"] == str(trial.number)
        assert run.info.status == "FINISHED"
        assert run.data.metrics["accuracy"] == pytest.approx(trial.values[0])
        assert run.data.metrics["latency_ms"] == pytest.approx(trial.values[1])
        assert run.data.metrics["latency_p50_ms"] == pytest.approx(trial.values[1])  # measured, not predicted
        for key in ("latency_p90_ms", "params", "macs", "train_seconds"):
            assert key in run.data.metrics
        assert "arch.stages.0.block" in run.data.params
        assert run.data.params["train.epochs"] == "1" and run.data.params["train.batch_size"] == "128"
        assert run.data.params["data.name"] == "digits"
        arch = ArchConfig.from_dict(trial.user_attrs["arch"])
        assert run.data.tags["blocknas.arch_hash"] == arch.short_hash()
        assert run.data.tags["blocknas.blocks"] == ",".join(s.block for s in arch.stages)
        assert [run.data.tags[f"blocknas.block.s{i}"] for i in range(len(arch.stages))] == [
            s.block for s in arch.stages
        ]
        assert run.data.tags["blocknas.state"] == "complete"
        logged = client.download_artifacts(run.info.run_id, "arch.yaml", str(in_tmp_dir))
        assert ArchConfig.from_yaml(logged) == arch
    history = client.get_metric_history(runs[0].info.run_id, "epoch_val_accuracy")
    assert len(history) == 1

    assert result.exported, "a finished study has a non-empty front"
    for path in result.exported:
        saved = ArchConfig.from_yaml(path)
        trial = study.trials[saved.meta["trial"]]
        model = timm.create_model("blocknet", arch=str(path))
        assert sum(p.numel() for p in model.parameters()) == saved.params() == saved.meta["params"]
        assert saved == ArchConfig.from_dict(trial.user_attrs["arch"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", result.tracking_uri)
    for row in result.front:  # a front trial's MLflow child run is an architecture reference too
        assert (
            resolve_arch(f"runs:/{row.run_id}")
            == row.arch
            == ArchConfig.from_yaml(result.exported[0].parent / f"{row.name}.yaml")
        )
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    parent_artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"pareto.png", "pareto_front.md", "study.yaml"} <= parent_artifacts

    resumed = run_search(config.with_overrides(n_trials=6), progress=False)
    assert len(resumed.study.trials) == 6
    assert resumed.parent_run_id == parent_id
    assert len(children(client, parent_id)) == 6
    experiment = client.get_experiment_by_name("t")
    parents = client.search_runs([experiment.experiment_id], "tags.`blocknas.role` = 'study'")
    assert len(parents) == 1


@pytest.mark.parametrize(("constraint", "limit"), [("params", 10), ("latency_ms", 1e-6)])
def test_over_budget_candidates_are_never_trained(in_tmp_dir: Path, constraint: str, limit: float) -> None:
    """Over a params budget: never built; over a latency budget: measured once; neither is trained."""
    result = run_search(tiny_config(constraints={constraint: limit}, n_trials=2), progress=False)
    client = MlflowClient(result.tracking_uri)
    for trial in result.study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert f"{constraint}=" in trial.user_attrs["over_budget"]
        assert trial.constraints[constraint] > 0
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.data.tags["blocknas.state"] == "over_budget"
        if constraint == "params":
            assert "latency_p50_ms" not in run.data.metrics  # rejected before it was built or measured
        else:
            assert run.data.metrics["latency_p50_ms"] == run.data.metrics["latency_ms"] > limit
        assert "accuracy" not in run.data.metrics and "epoch_train_loss" not in run.data.metrics
    assert result.front == []


def test_diverging_trial_fails_and_study_completes(in_tmp_dir: Path) -> None:
    result = run_search(
        tiny_config(train={"epochs": 1, "lr": 1e12, "label_smoothing": 0.0}, n_trials=2), progress=False
    )
    study = result.study
    assert len(study.trials) == 2 and trial_counts(study) == (2, 0)
    client = MlflowClient(result.tracking_uri)
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.FAIL
        assert "DivergedError" in trial.user_attrs["fail_reason"]
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.info.status == "FAILED"
        assert "DivergedError" in run.data.tags["blocknas.error"]
        assert run.data.tags[STATE_TAG] == STATE_DIVERGED  # not overwritten by the generic "failed"


def test_baselines_are_enqueued_first(in_tmp_dir: Path, tmp_path: Path) -> None:
    arch = ArchConfig.from_dict(
        {"stages": [{"block": "standard", "out_chs": 8, "stride": 2}], "input_size": [16, 16], "num_classes": 10}
    )
    path = tmp_path / "plain.yaml"
    arch.to_yaml(path)
    result = run_search(tiny_config(baselines=[str(path)], n_trials=2), progress=False)
    first = result.study.trials[0]
    assert first.user_attrs["baseline"] == "plain"
    assert ArchConfig.from_dict(first.user_attrs["arch"]) == arch.replace(in_chans=1)  # rebuilt for the space's 1×16×16


def test_config_errors_name_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "train": {"epochs": 1, "lr_max": 3}}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.lr_max: unknown key"):
        load_study_config(bad)
    bad.write_text(yaml.safe_dump({"name": "x", "constraints": {"latency_ms": -1}}))
    with pytest.raises(ConfigError, match=r"constraints\.latency_ms: -1"):
        load_study_config(bad)
    bad.write_text("name: x\ntrain: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: YAML syntax error: line"):
        load_study_config(bad)


def test_shipped_study_configs_load() -> None:
    for name in ("default", "tiny"):
        config = load_study_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert config.name == name


def test_objective_mismatch_on_existing_study_is_an_error(in_tmp_dir: Path) -> None:
    open_study(tiny_config())
    with pytest.raises(ConfigError, match="directions"):
        open_study(tiny_config(objective="accuracy"))


@pytest.mark.usefixtures("isolated_registry")
def test_single_objective_study_prunes_and_exports_its_best(in_tmp_dir: Path) -> None:
    # Three ordinary baselines complete first (the median pruner's startup trials; ~0.5
    # accuracy after epoch 0 at batch 32). The fourth cannot beat chance (~0.1), so it is
    # below their median after epoch 0 and is pruned. Trial 4 is sampled: either state.
    register_block("zeroed")(ZeroedConv)
    baselines = [
        tiny_arch(in_tmp_dir / "plain.yaml", "standard", "standard"),
        tiny_arch(in_tmp_dir / "sep.yaml", "separable", "standard"),
        tiny_arch(in_tmp_dir / "ir.yaml", "standard", "inverted_residual"),
        tiny_arch(in_tmp_dir / "dead.yaml", "standard", "zeroed"),
    ]
    config = tiny_config(
        objective="accuracy", pruner="median", train={"epochs": 2, "batch_size": 32}, baselines=baselines, n_trials=5
    )
    result = run_search(config, progress=False)
    study = result.study
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert len(study.trials) == 5 and trial_counts(study) == (5, 0)
    states = [t.state for t in study.trials]
    assert states[:4] == [optuna.trial.TrialState.COMPLETE] * 3 + [optuna.trial.TrialState.PRUNED]
    pruned = study.trials[3]
    assert pruned.user_attrs["baseline"] == "dead" and list(pruned.intermediate_values) == [0]
    startup_at_0 = sorted(t.intermediate_values[0] for t in study.trials[:3])
    assert pruned.intermediate_values[0] < startup_at_0[1]

    client = MlflowClient(result.tracking_uri)
    assert len(children(client, result.parent_run_id)) == 5
    for trial in study.trials:
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.info.status == "FINISHED"
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "epoch_val_accuracy")}
        assert history == pytest.approx(trial.intermediate_values)
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert run.data.tags["blocknas.state"] == "pruned"
            assert "accuracy" not in run.data.metrics and "train_seconds" not in run.data.metrics
        else:
            assert run.data.tags["blocknas.state"] == "complete"
            assert run.data.metrics["accuracy"] == pytest.approx(trial.value) == trial.intermediate_values[1]
            assert run.data.metrics["latency_ms"] == pytest.approx(trial.user_attrs["latency_ms"])
            for key in ("latency_p50_ms", "params", "macs", "train_seconds", "val_loss"):
                assert key in run.data.metrics

    best = study.best_trial
    assert [row.trial for row in result.front] == [best.number]
    assert len(result.exported) == 1
    saved = ArchConfig.from_yaml(result.exported[0])
    assert saved.meta["trial"] == best.number and saved.meta["accuracy"] == pytest.approx(best.value)
    assert saved == ArchConfig.from_dict(best.user_attrs["arch"])
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"pareto.png", "pareto_front.md", "pareto_front.csv"} <= parent_artifacts


class BoomConv(get_block("standard")):  # type: ignore[misc]
    """A user block with a bug: every forward raises."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.usefixtures("isolated_registry")
def test_trial_whose_block_raises_fails_and_study_goes_on(in_tmp_dir: Path) -> None:
    register_block("boom")(BoomConv)
    config = tiny_config(
        baselines=[tiny_arch(in_tmp_dir / "boom.yaml", "standard", "boom")],
        latency={"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},  # the default runtime: ONNX Runtime
        n_trials=3,
    )
    result = run_search(config, progress=False)
    study = result.study
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert trial_counts(study) == (3, 0)
    failed = study.trials[0]
    assert failed.user_attrs["fail_reason"] == "RuntimeError: boom"
    assert all(s["block"] != "boom" for t in study.trials[1:] for s in t.user_attrs["arch"]["stages"])

    client = MlflowClient(result.tracking_uri)
    run = client.get_run(failed.user_attrs[RUN_ID_ATTR])
    assert run.info.status == "FAILED"
    assert run.data.tags["blocknas.error"] == "RuntimeError: boom"
    assert run.data.tags["blocknas.state"] == "failed"
    error = Path(client.download_artifacts(run.info.run_id, "error.txt", str(in_tmp_dir))).read_text()
    assert "Traceback" in error and "RuntimeError: boom" in error
    assert "params" in run.data.metrics and "accuracy" not in run.data.metrics  # cost came before the failure
    assert {row.trial for row in result.front} <= {1, 2} and result.front


@pytest.mark.parametrize("args", [["--help"], ["search", "--help"]])
def test_console_script_runs(args: list[str]) -> None:
    script = Path(sys.executable).parent / "blocknas"
    assert script.is_file(), f"{script} is missing: install the project (pip install -e .)"
    proc = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: blocknas {' '.join(args[:-1])}".rstrip())
    assert ("--config CONFIG" in proc.stdout) == (args[0] == "search")  # search's option (top-level examples use it)


def test_summary_warns_when_latencies_come_from_different_fingerprints(in_tmp_dir: Path) -> None:
    from rich.console import Console

    from blocknas.search.report import print_search_summary
    from blocknas.search.study import FINGERPRINT_ATTR

    one = tiny_config(n_trials=2, latency={"threads": 1, "time_cap_s": 0.1, "min_repeats": 5, "warmup": 2})
    console = Console(record=True, width=300)
    print_search_summary(run_search(one, progress=False), one, console)
    assert "different devices" not in console.export_text()

    two = dataclasses.replace(one, n_trials=4, latency=one.latency.replace(threads=2))
    result = run_search(two, progress=False, allow_changed_definition=True)  # other latency settings: a new definition
    ids = [t.user_attrs[FINGERPRINT_ATTR] for t in result.study.trials]
    assert ids[0] == ids[1] != ids[2] == ids[3]  # threads are part of the fingerprint
    print_search_summary(result, two, console)
    text = console.export_text()
    assert "latencies were measured on 2 different devices or latency settings" in text
    assert f"{ids[0]} (2 trials)" in text and f"{ids[2]} (2 trials)" in text
