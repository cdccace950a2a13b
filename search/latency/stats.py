"""Pure statistics of a latency measurement: summaries, the median's confidence interval, the stopping rule.

Nothing here touches a clock or a model, so every rule can be tested on made-up timing
sequences. :func:`sample_adaptively` is the measuring loop itself, written against a
``time_chunk(n) -> samples`` callable and a ``clock() -> seconds`` callable.

Calls are timed in chunks of consecutive calls (~1/32 of the time cap each). The reported
median pools the *quiet* chunks, those within ``rel_precision`` of the lowest chunk median
(:func:`quiet_samples`), so a measurement that spans a burst of load from other processes
reports the undisturbed latency instead of a mixture; spread statistics use every sample.

Only NumPy is imported: the latency agent (:mod:`.agent`) runs this module on devices
without torch or SciPy.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = [
    "StopRule",
    "TimingSummary",
    "median_ci",
    "median_ci_ranks",
    "next_chunk_size",
    "quiet_samples",
    "sample_adaptively",
    "stop_reason",
    "summarize",
    "summarize_chunks",
]


@lru_cache(maxsize=4096)
def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks ``(lo, hi)`` of the sorted samples bounding the median's distribution-free CI.

    The number of samples below the true median is Binomial(n, 1/2) whatever the timing
    distribution, so ``[x_(j), x_(n-j+1)]`` (1-based) covers the median with probability
    ``1 - 2·P(B <= j-1)``; ``j`` is the largest rank keeping that at least ``confidence``.

    Returns:
        The two ranks, or ``None`` when ``n`` is too small for any interval of that confidence
        (n < 6 at 95%).
    """
    alpha = 1.0 - confidence
    k = np.arange(1, n + 1)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(n - k + 1) - np.log(k))))  # log C(n, k), k = 0..n
    cdf = np.cumsum(np.exp(log_comb - n * math.log(2)))  # Binomial(n, 1/2) CDF, SciPy's to the rank
    below = int(np.searchsorted(cdf, alpha / 2, side="right"))  # ranks m with P(B <= m) <= alpha/2
    if below == 0:
        return None
    j = below  # 1-based rank of the lower bound: j - 1 = largest such m
    return j - 1, n - j


def median_ci(samples: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (order statistics).

    Returns ``(-inf, inf)`` when there are too few samples for the requested confidence.
    """
    ranks = median_ci_ranks(len(samples), confidence)
    if ranks is None:
        return -math.inf, math.inf
    ordered = np.sort(np.asarray(samples, dtype=float))
    return float(ordered[ranks[0]]), float(ordered[ranks[1]])


@dataclass(frozen=True)
class TimingSummary:
    """Robust summary of per-call latencies in milliseconds.

    Attributes:
        p50_ms: Median of the quiet chunks' samples (:func:`quiet_samples`); for a single
            chunk, the plain median.
        p90_ms: 90th percentile of all samples.
        mean_ms: Mean of all samples.
        iqr_ms: Interquartile range of all samples.
        cv: Coefficient of variation (standard deviation / mean) of all samples.
        n_samples: Number of samples.
        ci_rel: Half-width of the 95% CI of ``p50_ms`` relative to it: the precision
            actually achieved (``inf`` with fewer than 6 samples).
        p50_all_ms: Plain median of all samples, slow phases included.
        quiet_share: Fraction of the samples in the quiet chunks.
    """

    p50_ms: float
    p90_ms: float
    mean_ms: float
    iqr_ms: float
    cv: float
    n_samples: int
    ci_rel: float
    p50_all_ms: float
    quiet_share: float = 1.0


def _median_and_ci_rel(x: np.ndarray, confidence: float) -> tuple[float, float]:
    median = float(np.median(x))
    lo, hi = median_ci(x, confidence)
    return median, (hi - lo) / 2 / median if median > 0 and math.isfinite(lo) else math.inf


def summarize(samples_ms: Sequence[float] | np.ndarray, confidence: float = 0.95) -> TimingSummary:
    """Median, 90th percentile, mean, interquartile range, coefficient of variation and CI of one chunk."""
    x = np.asarray(samples_ms, dtype=float)
    if x.size == 0:
        raise ValueError("cannot summarize an empty list of timings")
    p25, p75, p90 = np.percentile(x, [25, 75, 90])
    mean = float(x.mean())
    cv = float(x.std(ddof=1) / mean) if x.size > 1 and mean > 0 else 0.0
    p50, ci_rel = _median_and_ci_rel(x, confidence)
    return TimingSummary(p50, float(p90), mean, float(p75 - p25), cv, int(x.size), ci_rel, p50)


def quiet_samples(chunks: Sequence[Sequence[float]], tolerance: float) -> np.ndarray:
    """Samples of the chunks whose median is within ``tolerance`` of the lowest chunk median.

    On a shared machine, processes on other cores slow a network down in phases of tens to
    hundreds of milliseconds (+10-40% here). A chunk is a run of consecutive calls, so its
    median is that of one phase; other processes only ever add time, so the chunks with
    the lowest medians are the undisturbed ones, and pooling them gives a median that does
    not depend on how loaded the machine happened to be.
    """
    medians = [float(np.median(c)) for c in chunks]
    floor = min(medians)
    return np.concatenate([np.asarray(c, dtype=float) for c, m in zip(chunks, medians) if m <= floor * (1 + tolerance)])


def summarize_chunks(chunks: Sequence[Sequence[float]], tolerance: float, confidence: float = 0.95) -> TimingSummary:
    """Like :func:`summarize` on all samples, but ``p50_ms`` and ``ci_rel`` from the quiet chunks."""
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        raise ValueError("cannot summarize an empty list of timings")
    everything = summarize(np.concatenate([np.asarray(c, dtype=float) for c in chunks]), confidence)
    quiet = quiet_samples(chunks, tolerance)
    p50, ci_rel = _median_and_ci_rel(quiet, confidence)
    return dataclasses.replace(everything, p50_ms=p50, ci_rel=ci_rel, quiet_share=quiet.size / everything.n_samples)


@dataclass(frozen=True)
class StopRule:
    """When the measuring loop may stop; see :func:`stop_reason`.

    ``min_time_s`` makes the chunks span several load phases (capped by ``time_cap_s``);
    chunks last about ``time_cap_s / 32`` and hold at least ``min_repeats`` calls.
    """

    min_repeats: int = 30
    max_repeats: int = 2000
    rel_precision: float = 0.02
    time_cap_s: float = 1.0
    min_time_s: float = 0.25
    confidence: float = 0.95

    @property
    def chunk_s(self) -> float:
        return self.time_cap_s / 32


def stop_reason(chunks: Sequence[Sequence[float]], elapsed_s: float, rule: StopRule) -> str | None:
    """Why to stop now (``"precision"``, ``"max_repeats"``, ``"time_cap"``), or ``None`` to go on.

    Precision needs ``min_repeats`` samples, ``min(min_time_s, time_cap_s)`` of measuring,
    and the quiet median's 95% CI half-width within ``rel_precision`` of it.
    """
    n = sum(len(c) for c in chunks)
    if n >= rule.max_repeats:
        return "max_repeats"
    if n >= rule.min_repeats and elapsed_s >= min(rule.min_time_s, rule.time_cap_s):
        _, ci_rel = _median_and_ci_rel(quiet_samples(chunks, rule.rel_precision), rule.confidence)
        if ci_rel <= rule.rel_precision:
            return "precision"
    if elapsed_s >= rule.time_cap_s and n > 0:
        return "time_cap"
    return None


def next_chunk_size(n_done: int, elapsed_s: float, rule: StopRule) -> int:
    """How many calls the next chunk times.

    First ``min_repeats`` (which also measures the call rate); then as many as fit in
    ``rule.chunk_s`` at the rate seen so far, at least ``min_repeats``, trimmed to the time
    left (never below ``min_repeats``: the cap may be overrun by one short chunk) and to
    ``max_repeats`` (a remainder smaller than ``min_repeats`` joins this chunk).
    """
    if n_done == 0 or elapsed_s <= 0:
        want = rule.min_repeats
    else:
        per_call = elapsed_s / n_done
        left = max(rule.time_cap_s - elapsed_s, 0.0)
        want = max(rule.min_repeats, min(round(rule.chunk_s / per_call), int(left / per_call)))
    remaining = rule.max_repeats - n_done
    if remaining - want < rule.min_repeats:
        want = remaining
    return max(min(want, remaining), 1)


def sample_adaptively(
    time_chunk: Callable[[int], Sequence[float]],
    rule: StopRule,
    clock: Callable[[], float],
) -> tuple[list[list[float]], str]:
    """Time chunks of calls until :func:`stop_reason` says stop.

    Args:
        time_chunk: Runs ``n`` timed calls and returns their latencies in ms.
        rule: The stopping rule.
        clock: Monotonic seconds (``time.perf_counter`` in real use, a fake one in tests).

    Returns:
        The chunks of samples in order and the reason the loop stopped.
    """
    chunks: list[list[float]] = []
    n_done = 0
    start = clock()
    while True:
        elapsed = clock() - start
        reason = stop_reason(chunks, elapsed, rule)
        if reason is not None:
            return chunks, reason
        chunk = list(time_chunk(next_chunk_size(n_done, elapsed, rule)))
        chunks.append(chunk)
        n_done += len(chunk)
