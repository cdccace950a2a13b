"""Predicted latency in a real search: rejection before anything is built, self-calibration, the front.

Real Optuna studies, real MLflow SQLite stores, real ONNX Runtime measurements and training
on a small synthetic dataset; the lookup table lives under the test's ``runs/``.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from blocknas.blocks import ArchConfig
from blocknas.search.figures import pyplot
from blocknas.search.latency import LatencyPredictor
from blocknas.search.latency.table import MIN_CALIBRATION_POINTS, _fit
from blocknas.search.report import report_study
from blocknas.search.study import DUPLICATE_OF_ATTR, draw_front, run_search
from blocknas.search.tracking import RUN_ID_ATTR
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

SYNTHETIC = {"name": "synthetic", "num_samples": 160}
MEASURED_METRICS = ("latency_ms", "latency_p50_ms", "latency_p90_ms", "latency_samples")
TRAINING_METRICS = ("accuracy", "val_loss", "train_seconds", "epoch_train_loss", "epoch_val_accuracy")


def predicted_config(**overrides: object):
    latency = {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2, "mode": "predicted"}
    return tiny_config(data=SYNTHETIC, latency=latency, **overrides)


def table(config) -> LatencyPredictor:
    """The study's lookup table as another worker would open it."""
    return LatencyPredictor(config.latency, cache_dir=Path(config.runs_dir) / "latency_table")


def test_predicted_over_budget_is_rejected_before_building(in_tmp_dir: Path) -> None:
    config = predicted_config(constraints={"latency_ms": 1e-6}, n_trials=3)
    result = run_search(config, progress=False)
    client = MlflowClient(result.tracking_uri)
    assert len(result.study.trials) == 3
    for trial in result.study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["over_budget"].startswith("latency_ms=")
        assert trial.constraints["latency_ms"] > 0
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        assert run.data.tags["blocknas.state"] == "over_budget"
        assert run.data.tags["latency.calibrated"] == "false"
        assert run.data.metrics["latency_predicted_ms"] == trial.user_attrs["latency_ms"] > 0
        assert not set(run.data.metrics) & {*MEASURED_METRICS, *TRAINING_METRICS}, "measured or trained"
        assert "latency_measured_ms" not in trial.user_attrs
    assert table(config).n_calibration_points == 0, "no network was measured end to end"
    assert result.front == []

    fig, ax = pyplot().subplots()
    draw_front(result.study, ax)
    assert ax.get_xlabel() == "predicted latency (ms, lookup table)"
    (crosses,) = ax.collections
    assert len(crosses.get_offsets()) == 3, "rejected on predicted latency: drawn there as grey crosses"
    pyplot().close(fig)


def test_predicted_mode_calibrates_itself_from_measured_trials(in_tmp_dir: Path) -> None:
    n_trials = MIN_CALIBRATION_POINTS + 4  # repeats of a network are not measured again (duplicates)
    config = predicted_config(n_trials=n_trials, seed=3)
    result = run_search(config, progress=False)
    client = MlflowClient(result.tracking_uri)
    trials = sorted(result.study.trials, key=lambda t: t.number)
    points: dict[str, list[float]] = {}  # arch hash -> (raw sum, measured p50), as the table keeps them
    calibrated = 0
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        run = client.get_run(trial.user_attrs[RUN_ID_ATTR])
        metrics, tags = run.data.metrics, run.data.tags
        if trial.user_attrs.get(DUPLICATE_OF_ATTR) is not None:  # an architecture seen before: not measured again
            original = trials[trial.user_attrs[DUPLICATE_OF_ATTR]]
            assert tags["blocknas.duplicate_of"] == str(original.number) and trial.values == original.values
            continue
        assert int(tags["latency.calibration_points"]) == len(points)
        assert tags["latency.calibrated"] == str(len(points) >= MIN_CALIBRATION_POINTS).lower()
        raw, predicted = metrics["latency_predicted_raw_ms"], metrics["latency_predicted_ms"]
        scale, constant = _fit(list(points.values())) if len(points) >= MIN_CALIBRATION_POINTS else (1.0, 0.0)
        assert predicted == pytest.approx(scale * raw + constant, rel=1e-9)
        assert trial.values[1] == metrics["latency_ms"] == predicted
        assert trial.user_attrs["latency_measured_ms"] == metrics["latency_p50_ms"]
        assert "accuracy" in metrics
        calibrated += tags["latency.calibrated"] == "true"
        points.setdefault(tags["blocknas.arch_hash"], [raw, metrics["latency_p50_ms"]])
    assert calibrated >= 1, f"{len(points)} networks in {n_trials} trials: pick a seed with fewer repeats"
    shared = table(config)
    assert shared.n_calibration_points == len(points) and shared.calibrated
    assert shared.calibration == pytest.approx(_fit(list(points.values())))

    by_number = {t.number: t for t in trials}
    assert result.front
    for row in result.front:
        assert row.latency_ms == by_number[row.trial].values[1]
        assert row.latency_measured_ms == by_number[row.trial].user_attrs["latency_measured_ms"]
        assert row.latency_measured_ms != row.latency_ms
    for path in result.exported:
        meta = ArchConfig.from_yaml(path).meta
        assert meta["latency_measured_ms"] == by_number[meta["trial"]].user_attrs["latency_measured_ms"]
    rows = list(csv.DictReader(io.StringIO((result.export_folder / "front.csv").read_text())))
    assert [float(r["latency_measured_ms"]) for r in rows] == [r.latency_measured_ms for r in result.front]
    assert "| measured ms |" in (result.export_folder / "front.md").read_text()
    assert all(math.isfinite(r.latency_measured_ms) for r in result.front)

    report = report_study(result.study.study_name, storage_url="runs/optuna.journal", runs_dir="runs")
    summary = report.markdown.read_text()
    assert "| trial | accuracy | predicted ms | latency p50 ms | latency p90 ms |" in summary
    first = result.front[0]
    assert (
        f"| {first.trial} | {first.accuracy:.4f} | {first.latency_ms:.4g} | {first.latency_measured_ms:.4g} |"
        in summary
    )
