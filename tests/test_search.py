"""The search end to end: real Optuna studies, real MLflow SQLite stores, real training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import timm
import yaml
from mlflow.tracking import MlflowClient

import blocknas.blocks  # noqa: F401  (registers blocknet)
from blocknas.blocks import ArchConfig, ConfigError
from blocknas.search.config import StudyConfig, load_study_config
from blocknas.search.study import open_study, run_search, trial_counts
from blocknas.search.tracking import PARENT_RUN_ATTR, RUN_ID_ATTR

from .conftest import REPO_ROOT


def tiny_config(**overrides: object) -> StudyConfig:
    data = {
        "name": "t",
        "space": "tiny",
        "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 128},
        "latency": {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},
        "n_trials": 4,
        "sampler": "random",
    }
    data.update(overrides)
    from blocknas.blocks import parse

    return parse(StudyConfig, data)


def children(client: MlflowClient, parent_id: str) -> list:
    run = client.get_run(parent_id)
    return client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_study_end_to_end_and_resume(in_tmp_dir: Path) -> None:
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
        for key in ("latency_p90_ms", "params", "macs", "train_seconds"):
            assert key in run.data.metrics
        assert "arch.stages.0.block" in run.data.params
    history = client.get_metric_history(runs[0].info.run_id, "epoch_val_accuracy")
    assert len(history) == 1

    assert result.exported, "a finished study has a non-empty front"
    for path in result.exported:
        saved = ArchConfig.from_yaml(path)
        trial = study.trials[saved.meta["trial"]]
        model = timm.create_model("blocknet", arch=str(path))
        assert sum(p.numel() for p in model.parameters()) == saved.params() == saved.meta["params"]
        assert saved == ArchConfig.from_dict(trial.user_attrs["arch"])
    parent_artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"pareto.png", "pareto_front.md", "study.yaml"} <= parent_artifacts

    resumed = run_search(config.with_overrides(n_trials=6), progress=False)
    assert len(resumed.study.trials) == 6
    assert resumed.parent_run_id == parent_id
    assert len(children(client, parent_id)) == 6
    experiment = client.get_experiment_by_name("t")
    parents = client.search_runs([experiment.experiment_id], "tags.`blocknas.role` = 'study'")
    assert len(parents) == 1


def test_over_budget_candidates_are_never_trained(in_tmp_dir: Path) -> None:
    result = run_search(tiny_config(constraints={"params": 10}, n_trials=3), progress=False)
    client = MlflowClient(result.tracking_uri)
    for trial in result.study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert "params=" in trial.user_attrs["over_budget"]
        assert trial.constraints["params"] > 0
        assert (trial.datetime_complete - trial.datetime_start).total_seconds() < 1.0
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.data.tags["blocknas.state"] == "over_budget"
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


def test_baselines_are_enqueued_first(in_tmp_dir: Path, tmp_path: Path) -> None:
    arch = ArchConfig.from_dict(
        {"stages": [{"block": "standard", "out_chs": 8, "stride": 2}], "input_size": [16, 16], "num_classes": 10}
    )
    path = tmp_path / "plain.yaml"
    arch.to_yaml(path)
    result = run_search(tiny_config(baselines=[str(path)], n_trials=2), progress=False)
    first = result.study.trials[0]
    assert first.user_attrs["baseline"] == "plain"
    assert ArchConfig.from_dict(first.user_attrs["arch"]) == arch


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


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "space": "tiny", "sampler": "grid-ish"}))
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "search.py"), "--config", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "bad.yaml: sampler: 'grid-ish' is not one of" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_shipped_study_configs_load() -> None:
    for name in ("default", "tiny"):
        config = load_study_config(REPO_ROOT / "configs" / f"{name}.yaml")
        assert config.name == name


def test_objective_mismatch_on_existing_study_is_an_error(in_tmp_dir: Path) -> None:
    open_study(tiny_config())
    with pytest.raises(ConfigError, match="directions"):
        open_study(tiny_config(objective="accuracy"))
