"""Calibrate a per-block lookup table on a device once, and say how well it predicts networks it never saw.

``blocknas latency calibrate --agent URL --out DIR`` draws networks from a space: the first
``n_networks`` fill the table and fit its correction (:meth:`.LatencyPredictor.calibrate`),
the ``n_held_out`` others are predicted from it *before* they are measured, then measured;
the share within ±10 % and Kendall's τ between predicted and measured are stored in the
table file (``<out>/<fingerprint_id>.json``), so every study that uses the table offline
(``latency: {mode: predicted, table: PATH}``) shows how far to trust it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from scipy.stats import kendalltau

from blocknas.blocks import ArchConfig, BlockNet, ConfigError
from blocknas.search.threads import seeded_rng
from blocknas.spaces import SearchSpace

from .measure import measure_latency
from .table import LatencyPredictor
from .target import LatencyTarget

__all__ = [
    "MAX_CALIBRATION_NETWORKS",
    "Calibration",
    "NetworkShape",
    "calibrate_table",
    "prediction_accuracy",
    "sample_architectures",
]

log = logging.getLogger(__name__)

MAX_CALIBRATION_NETWORKS = 1000
"""Most networks ``calibrate`` draws for either role."""


def sample_architectures(space: SearchSpace, n: int, seed: int) -> list[ArchConfig]:
    """``n`` distinct architectures of ``space`` drawn with Optuna's RandomSampler (fewer if the space is smaller)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs: dict[str, ArchConfig] = {}
    for _ in range(50 * n):  # a small space runs out of new networks: stop drawing
        if len(archs) == n:
            break
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, 0.0)
        archs.setdefault(arch.short_hash(), arch)
    return list(archs.values())


def prediction_accuracy(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within ±10 % of measured, Kendall's τ and the median relative error of predictions."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = np.abs(p - m) / m
    tau = float(kendalltau(p, m).statistic) if len(p) > 1 else float("nan")
    return {
        "within_10pct": float(np.mean(rel <= 0.10)),
        "kendall_tau": tau,
        "median_abs_rel_error": float(np.median(rel)),
    }


@dataclass(frozen=True)
class NetworkShape:
    """The input and classes the studies' networks have (what a space leaves to the data)."""

    input_size: tuple[int, int] = (32, 32)
    in_chans: int = 3
    num_classes: int = 10


@dataclass(frozen=True)
class Calibration:
    """A calibrated table and how well it predicted the held-out networks.

    Attributes:
        table: The table (its file is ``table.path``).
        accuracy: What :meth:`.LatencyPredictor.accuracy` now returns for it.
        predicted_ms, measured_ms: The held-out networks' predictions and measurements.
    """

    table: LatencyPredictor
    accuracy: dict[str, Any]
    predicted_ms: list[float]
    measured_ms: list[float]


def calibrate_table(
    target: LatencyTarget,
    space: SearchSpace,
    *,
    out_dir: str | Path,
    n_networks: int = 10,
    n_held_out: int = 10,
    seed: int = 0,
    shape: NetworkShape = NetworkShape(),
) -> Calibration:
    """Fill and calibrate a table for ``target``'s device on networks of ``space``; judge it on held-out ones.

    Args:
        target: Where and how to measure (an agent's address for a device's table).
        space: The networks to calibrate on: use the space the studies will search.
        out_dir: Folder of the table file, named by the device's fingerprint id.
        n_networks: Networks that fill the table and fit its correction.
        n_held_out: Other networks, predicted first and then measured.
        seed: Seed of the networks drawn.
        shape: Input size, channels and classes where ``space`` does not pin them: the
            studies' data's, since every table entry is for one input shape.

    Raises:
        AgentError: The agent failed while calibrating.
        ConfigError: The space holds fewer than ``n_networks + 2`` distinct networks.
    """
    space = space.for_data(shape)
    archs = sample_architectures(space, n_networks + n_held_out, seed)
    if len(archs) < n_networks + 2:
        raise ConfigError(
            f"the space {space.name or ''!r} holds {len(archs)} distinct networks; calibrating on {n_networks} "
            "needs at least 2 more to hold out",
            path="networks",
        )
    fit, held_out = archs[:n_networks], archs[n_networks:]
    table = LatencyPredictor(
        target.replace(mode="predicted", table=None), cache_dir=out_dir, min_calibration_points=min(5, n_networks)
    )
    log.info("calibrating %s on %d networks of %s", table.path, len(fit), space.name or "the space")
    table.calibrate(fit)
    predicted = [table.predict(arch) for arch in held_out]  # before measuring them: they never join the fit
    measured = [_measure(arch, target) for arch in held_out]
    accuracy: dict[str, Any] = {
        **prediction_accuracy(predicted, measured),
        "n_held_out": len(held_out),
        "n_calibration": len(fit),
        "space": space.name,
        "input": [space.in_chans, *(space.input_size or shape.input_size)],
        "seed": seed,
        "calibrated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    table.record_accuracy(accuracy)
    return Calibration(table, accuracy, predicted, measured)


def _measure(arch: ArchConfig, target: LatencyTarget) -> float:
    with seeded_rng(0):
        model = BlockNet(arch)
    return measure_latency(model, (arch.in_chans, *arch.input_size), target.replace(mode="measured", table=None)).p50_ms
