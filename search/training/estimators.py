"""Cheap estimates of a network's fully trained accuracy, and how well an estimate ranks networks.

An *estimate* is any number per network that should rank networks like their accuracy after
a real training budget does: the brief accuracy a trial records, the training speed estimate
(Ru et al. 2021, "Speedy Performance Estimation for Neural Architecture Search"), a zero-cost
proxy, the parameter count, or a ranker fitted on a study's own trials. :func:`rank_agreement`
scores an estimate against the truth (Kendall τ, Spearman ρ, top-k overlap, each with a
bootstrap interval over networks); ``benchmarks/groundtruth.py`` uses it to choose the default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "Agreement",
    "Interval",
    "fit_ranker",
    "matched_tau",
    "rank_agreement",
    "tau_difference",
    "top_overlap",
    "training_speed_estimate",
]


def training_speed_estimate(losses: Sequence[float]) -> float:
    """Minus the sum of the training losses (Ru et al.'s TSE): higher means the network learns faster.

    Args:
        losses: Training losses in the order they were seen (per step, or per epoch: the mean of
            each epoch, which ranks like the per-step sum when every epoch has the same steps).

    Raises:
        ValueError: no losses, or one that is not finite (a diverged run has no estimate).
    """
    values = [float(v) for v in losses]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"training losses must be finite and at least one, got {values!r}")
    return -math.fsum(values)


def top_overlap(estimate: Sequence[float], truth: Sequence[float], fraction: float = 0.1) -> float:
    """Share of the truly best ``fraction`` of networks that the estimate also puts in its best ``fraction``."""
    k = max(1, round(len(truth) * fraction))
    best_estimated = set(np.argsort(-np.asarray(estimate, dtype=float), kind="stable")[:k])
    best_true = set(np.argsort(-np.asarray(truth, dtype=float), kind="stable")[:k])
    return len(best_estimated & best_true) / k


@dataclass(frozen=True)
class Interval:
    """A point value and its bootstrap 95 % interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


@dataclass(frozen=True)
class Agreement:
    """How an estimate ranks ``n`` networks against the truth: τ, ρ and top-``fraction`` overlap."""

    n: int
    tau: Interval
    rho: Interval
    overlap: Interval
    fraction: float


def rank_agreement(
    estimate: Sequence[float],
    truth: Sequence[float],
    *,
    fraction: float = 0.1,
    n_boot: int = 1000,
    seed: int = 0,
) -> Agreement:
    """Kendall τ, Spearman ρ and top-``fraction`` overlap, with percentile bootstrap intervals over networks.

    Raises:
        ValueError: the two sequences differ in length, or hold fewer than 3 networks.
    """
    xs, ys = _resampled(estimate, truth, n_boot=n_boot, seed=seed)
    tau, rho, overlap = (
        _interval(values) for values in (_kendall_tau_b(xs, ys), _spearman(xs, ys), _top_overlaps(xs, ys, fraction))
    )
    return Agreement(xs.shape[1], tau, rho, overlap, fraction=fraction)


def matched_tau(
    estimate: Sequence[float],
    truth: Sequence[float],
    given: Sequence[float],
    *,
    tolerance: float = 0.15,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Interval, int]:
    """Kendall's τ over the pairs of networks whose ``given`` (e.g. latency) is within ``tolerance``.

    A multi-objective search sees latency on its own axis; what it needs from an accuracy estimate
    is the order of networks at equal latency. An estimate that only tracks network size orders
    such pairs at random (τ near 0) however high its plain τ. Returns the τ with a bootstrap
    interval over networks, and how many pairs it rests on. (Kendall's partial τ was tried first:
    it is not 0 for an estimate that is independent of the truth given latency, so it was not used.)

    Raises:
        ValueError: the sequences differ in length, hold fewer than 3 networks, or ``given`` is not positive.
    """
    if not np.all(np.asarray(given, dtype=float) > 0):
        raise ValueError("given must be positive (it is compared by ratio)")
    xs, ys, logs = _resampled(estimate, truth, np.log(np.asarray(given, dtype=float)), n_boot=n_boot, seed=seed)
    within = math.log1p(tolerance)
    pairs = int((np.abs(logs[0, :, None] - logs[0, None, :]) <= within).sum() - logs.shape[1]) // 2
    return _interval(_kendall_tau_b(xs, ys, near=(logs, within))), pairs


def tau_difference(
    estimate: Sequence[float],
    baseline: Sequence[float],
    truth: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> Interval:
    """τ(estimate, truth) − τ(baseline, truth), paired over the same bootstrap samples of networks.

    Two estimates judged on the same networks share their sampling noise; the paired interval
    says whether one ranks better than the other, which two overlapping intervals cannot.

    Raises:
        ValueError: the sequences differ in length, or hold fewer than 3 networks.
    """
    xs, bs, ys = _resampled(estimate, baseline, truth, n_boot=n_boot, seed=seed)
    return _interval(_kendall_tau_b(xs, ys) - _kendall_tau_b(bs, ys))


def _resampled(*sequences: Sequence[float], n_boot: int, seed: int) -> list[np.ndarray]:
    """Each sequence as rows of bootstrap samples over networks, row 0 the sample itself (the point estimate).

    Raises:
        ValueError: the sequences differ in length, or hold fewer than 3 networks.
    """
    arrays = [np.asarray(v, dtype=float) for v in sequences]
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) != 1 or lengths[0] < 3:
        raise ValueError(f"need equally long sequences of >= 3 values, got lengths {lengths}")
    n = lengths[0]
    samples = np.vstack([np.arange(n), np.random.default_rng(seed).integers(0, n, (n_boot, n))])
    return [a[samples] for a in arrays]


def _interval(values: np.ndarray) -> Interval:
    """Row 0 as the point value, the 2.5 and 97.5 percentiles of the other rows as the interval."""
    low, high = np.percentile(values[1:], [2.5, 97.5])
    return Interval(float(values[0]), float(low), float(high))


def _kendall_tau_b(xs: np.ndarray, ys: np.ndarray, near: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """Kendall's τ-b of each row pair (as ``scipy.stats.kendalltau``), 0 where a row is constant.

    ``near=(zs, within)`` counts only the pairs whose ``zs`` values differ by at most ``within``.
    """
    chunk = max(1, 4_000_000 // xs.shape[1] ** 2)  # rows at a time: bounded pairwise-sign matrices
    taus = np.zeros(len(xs))
    for start in range(0, len(xs), chunk):
        part = slice(start, start + chunk)
        sx = np.sign(xs[part, :, None] - xs[part, None, :])
        sy = np.sign(ys[part, :, None] - ys[part, None, :])
        if near is not None:
            zs, within = near
            close = np.abs(zs[part, :, None] - zs[part, None, :]) <= within
            sx, sy = sx * close, sy * close
        untied = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
        np.divide((sx * sy).sum(axis=(1, 2)), untied, out=taus[part], where=untied > 0)
    return taus


def _spearman(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Spearman's ρ of each row pair (Pearson's r of average ranks), 0 where a row is constant."""
    rx, ry = (r - r.mean(axis=1, keepdims=True) for r in (stats.rankdata(xs, axis=1), stats.rankdata(ys, axis=1)))
    norm = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    return np.divide((rx * ry).sum(axis=1), norm, out=np.zeros(len(xs)), where=norm > 0)


def _top_overlaps(xs: np.ndarray, ys: np.ndarray, fraction: float) -> np.ndarray:
    """:func:`top_overlap` of each row pair."""
    k = max(1, round(xs.shape[1] * fraction))
    rows = np.arange(len(xs))[:, None]
    best = np.zeros(xs.shape, dtype=bool), np.zeros(xs.shape, dtype=bool)
    best[0][rows, np.argsort(-xs, axis=1, kind="stable")[:, :k]] = True
    best[1][rows, np.argsort(-ys, axis=1, kind="stable")[:, :k]] = True
    return (best[0] & best[1]).sum(axis=1) / k


def _finite(value: float) -> float:
    """τ and ρ are NaN when one side is constant (a bootstrap sample of ties): no agreement, 0."""
    return float(value) if math.isfinite(value) else 0.0


def fit_ranker(features: np.ndarray, target: Sequence[float], *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of ``target`` from ``features`` by ridge regression (cross-validated).

    Fitted on a study's own completed trials (features: architecture, params, MACs, proxies,
    early curve; target: the trials' noisy brief accuracy), each network's prediction comes from
    a model that never saw it, so the prediction averages away per-trial noise where the
    features carry signal and is near-constant (τ near 0) where they carry none.

    Args:
        features: One row per network; columns are standardised inside each fold.
        target: The value to predict, one per network.
        folds: K of the K-fold split (at most the number of networks).
        seed: Seed of the fold assignment.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = np.asarray(features, dtype=float), np.asarray(target, dtype=float)
    if x.ndim != 2 or len(x) != len(y) or len(y) < 4:
        raise ValueError(f"need a 2-D feature matrix with one row per target value (>= 4), got {x.shape}, {y.shape}")
    predictions = np.empty(len(y))
    splitter = KFold(n_splits=min(folds, len(y)), shuffle=True, random_state=seed)
    for train, test in splitter.split(x):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        model.fit(x[train], y[train])
        predictions[test] = model.predict(x[test])
    return predictions
