"""Statistics of an ablation: mean ± std over seeds, paired differences with a t confidence interval.

Two variants trained with the same seed share their initialisation RNG stream and their
mini-batch order, so their accuracies are paired: the difference is computed per seed
first, and its spread (not the two accuracies' spreads) sets the interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["PairedDifference", "mean_std", "paired_difference"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; ``nan`` for fewer than two values)."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else math.nan


@dataclass(frozen=True)
class PairedDifference:
    """``level - base`` over the seeds both have.

    Attributes:
        n: Number of paired seeds.
        mean: Mean difference.
        std: Sample standard deviation of the differences (``nan`` when n < 2).
        low: Lower end of the confidence interval (``nan`` when n < 2: undefined).
        high: Upper end of the confidence interval.
        confidence: Confidence level of the interval.
    """

    n: int
    mean: float
    std: float
    low: float
    high: float
    confidence: float

    @property
    def has_interval(self) -> bool:
        return self.n >= 2

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0 (``False`` when there is no interval)."""
        return self.has_interval and (self.low > 0 or self.high < 0)


def paired_difference(
    level: Mapping[int, float], base: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference:
    """Paired difference ``level[seed] - base[seed]`` over the seeds present in both.

    The interval is Student's t with ``n - 1`` degrees of freedom:
    ``mean ± t_{(1+c)/2, n-1} · std / sqrt(n)``. With one seed it is undefined (``nan``),
    with zero spread it collapses to the mean.

    Args:
        level: Accuracy per seed of the level being compared.
        base: Accuracy per seed of the base level.
        confidence: Two-sided confidence level.
    """
    seeds = sorted(set(level) & set(base))
    diffs = [level[s] - base[s] for s in seeds]
    mean, std = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        return PairedDifference(n, mean, std, math.nan, math.nan, confidence)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return PairedDifference(n, mean, std, mean - half, mean + half, confidence)
