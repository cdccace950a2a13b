"""The MLflow run of a full training: params, per-epoch curves, final metrics, checkpoint, architecture, model.

The run logs ``arch.yaml`` at its root like a search trial's child run, so
``arch="runs:/<run_id>"`` resolves a trained network too. The model is logged with
``mlflow.pytorch.log_model`` (signature and input example from the validation data; two
samples, so the exported program keeps a dynamic batch dimension).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blocknas.blocks import ArchConfig
from blocknas.blocks.schema import to_plain
from blocknas.search.data import DataSplit
from blocknas.search.tracking import StudyTracker, mask_url, resolve_tracking_uri
from blocknas.search.tracking.names import (
    ARCH_HASH_TAG,
    MACS_METRIC,
    OUT_DIR_TAG,
    PARAMS_METRIC,
    ROLE_TAG,
    TRAIN_SECONDS_METRIC,
)

from .checkpoint import load_model
from .full_config import FullTrainConfig, FullTrainResult

__all__ = ["TrainRun"]

log = logging.getLogger(__name__)


class TrainRun:
    """One training's MLflow run; every method does nothing when tracking is off."""

    def __init__(self, tracker: StudyTracker | None, run_id: str | None) -> None:
        self.tracker, self.run_id = tracker, run_id

    @classmethod
    def open(
        cls,
        config: FullTrainConfig,
        arch: ArchConfig,
        out: Path,
        *,
        run_id: str | None = None,
        history: Sequence[Mapping[str, float]] = (),
    ) -> TrainRun:
        """Create the run (params, ``arch.yaml``, ``train.yaml``), or reopen ``run_id`` on resume.

        On resume, the epochs of the checkpoint's ``history`` that the run lacks (a kill
        between checkpoint and logging) are logged, so every epoch is logged exactly once.
        """
        if not config.tracking:
            return cls(None, None)
        tracker = cls._tracker(config)
        if run_id is not None:
            tracker.client.update_run(run_id, status="RUNNING")
            reopened = cls(tracker, run_id)
            logged = {m.step for m in tracker.client.get_metric_history(run_id, "epoch_accuracy")}
            for record in history:
                epoch = int(record["epoch"])
                if epoch not in logged:
                    reopened.log_epoch({k: v for k, v in record.items() if k != "epoch"}, epoch)
            return reopened
        run_id = tracker.create_run(
            run_name=out.name,
            tags={
                ROLE_TAG: "train",
                ARCH_HASH_TAG: arch.short_hash(),
                OUT_DIR_TAG: str(out.resolve()),
            },
        )
        tracker.log(run_id, params=_params(config, arch))
        tracker.log_file(run_id, out / "arch.yaml")
        tracker.log_file(run_id, out / "train.yaml")
        log.info("MLflow run %s in experiment %r at %s", run_id, config.experiment, mask_url(tracker.tracking_uri))
        return cls(tracker, run_id)

    @classmethod
    def finished(cls, config: FullTrainConfig, run_id: str | None) -> bool:
        """Whether there is nothing left to log: tracking off, or ``run_id`` ended ``FINISHED``."""
        if not config.tracking or run_id is None:
            return True
        return cls._tracker(config).client.get_run(run_id).info.status == "FINISHED"

    @staticmethod
    def _tracker(config: FullTrainConfig) -> StudyTracker:
        uri = resolve_tracking_uri(config.tracking_uri, config.runs_dir)
        return StudyTracker(uri, config.experiment, runs_dir=config.runs_dir)

    def log_epoch(self, record: Mapping[str, float], epoch: int) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.log(self.run_id, metrics={f"epoch_{k}": v for k, v in record.items()}, step=epoch)

    def finish(self, result: FullTrainResult, arch: ArchConfig, data: DataSplit) -> None:
        """Final metrics, the best checkpoint and history, then the model; marks the run finished."""
        if self.tracker is None or self.run_id is None:
            return
        cost = arch.cost()
        metrics = {
            "best_accuracy": result.best_accuracy,
            "best_epoch": result.best_epoch,
            "final_accuracy": result.final_accuracy,
            TRAIN_SECONDS_METRIC: sum(h["seconds"] for h in result.history),
            PARAMS_METRIC: cost.params,
            MACS_METRIC: cost.macs,
        }
        self.tracker.log(self.run_id, metrics=metrics)
        self.tracker.log_file(self.run_id, result.weights, "checkpoint")
        self.tracker.log_file(self.run_id, result.out_dir / "history.json")
        model = load_model(arch, result.weights)
        _log_model(self.tracker.tracking_uri, self.run_id, model, data.x_val[:2].clone())

    def end(self, status: str) -> None:
        if self.tracker is not None and self.run_id is not None:
            self.tracker.end_run(self.run_id, status)


def _params(config: FullTrainConfig, arch: ArchConfig) -> dict[str, Any]:
    params: dict[str, Any] = {f"arch.{k}": v for k, v in arch.flat_params().items()}
    for section in ("data", "train", "augment", "ema"):
        params.update({f"{section}.{k}": v for k, v in to_plain(getattr(config, section)).items()})
    params.update(
        arch_ref=config.arch if isinstance(config.arch, str) else "inline",
        seed=config.seed,
        weights_format=config.weights_format,
    )
    return params


def _log_model(tracking_uri: str, run_id: str, model: nn.Module, example: torch.Tensor) -> None:
    """``mlflow.pytorch.log_model`` into ``run_id`` (the fluent API needs it active), which ends the run."""
    import mlflow
    import timm
    from mlflow.models import infer_signature

    with torch.inference_mode():
        output = model(example).numpy()
    signature = infer_signature(example.numpy(), output)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"timm=={timm.__version__}"]
    with _fluent_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        mlflow.pytorch.log_model(
            model, name="model", signature=signature, input_example=example.numpy(), pip_requirements=requirements
        )


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a while, then restore it *and* the environment.

    ``mlflow.set_tracking_uri`` also sets ``$MLFLOW_TRACKING_URI``, which child processes
    (e.g. search workers started later) would otherwise inherit.
    """
    import mlflow

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # Back to "not set in this process" (None unsets MLflow's URI and the variable), then the
        # variable as it was: a URI set before is found through it again, and later changes of
        # the variable are followed, as before.
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None is accepted: unset
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env
