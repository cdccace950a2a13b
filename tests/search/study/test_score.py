"""``score:``: what a trial's accuracy objective is, logged to MLflow beside the raw accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from mlflow.tracking import MlflowClient

import blocknas.blocks
from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataConfig, load_data
from blocknas.search.study import StudyConfig, definition_settings, run_search
from blocknas.search.training import TrainConfig, seed_everything, train_briefly
from tests.helpers.configs import tiny_config
from tests.helpers.mlflow import children


def test_ema_accuracy_scores_the_trials_and_both_accuracies_are_logged(in_tmp_dir: Path) -> None:
    config = tiny_config(n_trials=2, score="ema_accuracy", train={"epochs": 1, "batch_size": 128, "ema_decay": 0.9})
    result = run_search(config, progress=False)
    client = MlflowClient(result.tracking_uri)
    runs = {r.info.run_name: r.data.metrics for r in children(client, result.parent_run_id)}
    trials = [t for t in result.study.trials if t.values]
    assert len(trials) == 2
    for trial in trials:
        metrics = next(m for name, m in runs.items() if name.startswith(f"trial-{trial.number:04d}"))
        assert trial.values[0] == metrics["accuracy"] == metrics["ema_accuracy"]
        assert "raw_accuracy" in metrics
    assert any(runs_metrics["ema_accuracy"] != runs_metrics["raw_accuracy"] for runs_metrics in runs.values())


def test_ema_accuracy_needs_an_ema_decay() -> None:
    with pytest.raises(ConfigError, match=r"score.*set train\.ema_decay"):
        tiny_config(score="ema_accuracy")
    with pytest.raises(ConfigError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_the_default_score_leaves_older_study_definitions_unchanged() -> None:
    settings = definition_settings(tiny_config())
    assert "score" not in settings and "ema_decay" not in settings["train"]
    assert definition_settings(tiny_config(score="ema_accuracy", train={"ema_decay": 0.9}))["score"] == "ema_accuracy"


def test_brief_training_with_an_ema_leaves_the_raw_run_unchanged() -> None:
    """The EMA only reads the weights: the raw accuracy is the one a run without it reaches, bit for bit."""
    data = load_data(DataConfig(name="synthetic", num_samples=128), input_size=(16, 16), in_chans=1)
    arch = {"stages": [{"block": "separable", "out_chs": 8, "stride": 2}], "in_chans": 1, "input_size": [16, 16]}
    results = []
    for decay in (None, 0.9):
        seed_everything(0)
        model = timm.create_model("blocknet", arch=parse(blocknas.blocks.ArchConfig, arch))
        cfg = TrainConfig(epochs=2, batch_size=32, ema_decay=decay, threads=1, device="cpu")
        results.append(train_briefly(model, data, cfg, seed=0))
    plain, with_ema = results
    assert plain.ema_val_accuracy is None and with_ema.ema_val_accuracy is not None
    assert plain.val_accuracy == with_ema.val_accuracy and torch.isclose(
        torch.tensor(plain.val_loss), torch.tensor(with_ema.val_loss), rtol=0, atol=0
    )


def test_score_is_a_study_setting() -> None:
    assert tiny_config().score == "accuracy"
    with pytest.raises(ConfigError, match="score"):
        parse(StudyConfig, {"name": "s", "score": "tse"})
