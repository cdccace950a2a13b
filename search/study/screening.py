"""Zero-cost proxies in a study: which to compute, how well each ranks the study's own trials, and screening.

Screening (``screen: {proxy: auto | <name>, pool: K}``, experimental): each trial draws K
candidates, checks the budgets, scores the feasible ones with the proxy and trains only the
best, all inside that one trial (:mod:`.screened`): no extra trials, no extra MLflow runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, Trial, TrialState
from scipy import stats
from torch import Tensor, nn

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import check_range
from blocknas.search.tracking import StudyTracker
from blocknas.search.training import UnknownProxyError, score_proxies
from blocknas.search.training.proxies import ProxyScore, check_proxy_names

from .attrs import PROXY_ATTR_PREFIX, SCREEN_POOL_ATTR, SCREEN_PROXY_ATTR

__all__ = [
    "AUTO_MIN_TRIALS",
    "BASELINE_PROXY",
    "MAX_POOL",
    "ProxyCorrelation",
    "ScreenConfig",
    "auto_proxy",
    "check_proxies",
    "proxy_attr",
    "proxy_correlations",
    "proxy_values",
    "record_proxies",
    "screen_counts",
]

AUTO_MIN_TRIALS = 10  # complete trials before ``proxy: auto`` trusts a τ; ``params`` until then
BASELINE_PROXY = "params"
MAX_POOL = 256
"""Most candidates screened per trial: each is a sampler draw, a network build and a proxy pass
(and a latency measurement when latency is budgeted), all inside one trial's time."""


@dataclass(frozen=True)
class ScreenConfig:
    """The study YAML's ``screen:`` mapping (absent: no screening). Experimental: zero-cost
    proxies mostly track network size, and screening has not been shown to pay.

    Attributes:
        proxy: ``auto`` (the proxy with the best Kendall τ on the study's complete trials once
            there are ``AUTO_MIN_TRIALS``, ``params`` before) or a registered proxy's name.
        pool: Candidates drawn per trial, 2 to ``MAX_POOL`` (256); the best by the proxy is
            trained, within that one trial.
    """

    proxy: str = "auto"
    pool: int = 4

    def __post_init__(self) -> None:
        check_range(self.pool, "pool", 2, MAX_POOL, hint=" (a pool of one screens nothing)")
        if self.proxy != "auto":
            try:
                check_proxy_names([self.proxy])
            except UnknownProxyError as exc:
                raise ConfigError(f"{exc}, or auto", path="proxy") from None


def check_proxies(names: Sequence[str]) -> None:
    """Config check of the ``proxies:`` list: registered names, no repeats."""
    for i, name in enumerate(names):
        try:
            check_proxy_names([name])
        except UnknownProxyError as exc:
            raise ConfigError(str(exc), path=f"proxies[{i}]") from None
        if name in names[:i]:
            raise ConfigError(f"{name!r} is listed twice", path=f"proxies[{i}]")


def proxy_attr(name: str) -> str:
    """The trial user attribute (and MLflow metric) holding proxy ``name``'s value."""
    return f"{PROXY_ATTR_PREFIX}{name}"


def proxy_values(trial: FrozenTrial) -> dict[str, float]:
    """The proxies stored on ``trial``, by name."""
    n = len(PROXY_ATTR_PREFIX)
    return {k[n:]: float(v) for k, v in trial.user_attrs.items() if k.startswith(PROXY_ATTR_PREFIX) and v is not None}


@dataclass(frozen=True)
class ProxyCorrelation:
    """How well one proxy ranks the study's complete trials by brief accuracy."""

    proxy: str
    n: int
    kendall_tau: float
    kendall_p: float
    spearman_rho: float
    spearman_p: float

    @property
    def baseline(self) -> bool:
        return self.proxy == BASELINE_PROXY


def proxy_correlations(trials: Iterable[FrozenTrial], names: Iterable[str] | None = None) -> list[ProxyCorrelation]:
    """Kendall τ and Spearman ρ (with p-values) of each proxy against the brief accuracy of complete trials.

    Non-finite proxy values (a singular NASWOT kernel) rank lowest. With fewer than 3 trials,
    or constant values, a coefficient is NaN.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    found = sorted({k for t in complete for k in proxy_values(t)}) if names is None else list(names)
    found = sorted(found, key=lambda k: (k != BASELINE_PROXY, k))
    rows = []
    for name in found:
        pairs = [(proxy_values(t)[name], t.values[0]) for t in complete if name in proxy_values(t)]
        xs = [x if math.isfinite(x) else -1e300 for x, _ in pairs]
        ys = [y for _, y in pairs]
        tau = rho = (math.nan, math.nan)
        if len(pairs) >= 3 and len(set(xs)) > 1 and len(set(ys)) > 1:
            tau = tuple(stats.kendalltau(xs, ys))  # type: ignore[assignment]
            rho = tuple(stats.spearmanr(xs, ys))  # type: ignore[assignment]
        rows.append(ProxyCorrelation(name, len(pairs), float(tau[0]), float(tau[1]), float(rho[0]), float(rho[1])))
    return rows


def auto_proxy(trials: Sequence[FrozenTrial], candidates: Sequence[str]) -> str:
    """``proxy: auto``: the candidate proxy with the best Kendall τ so far, ``params`` before enough trials."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < AUTO_MIN_TRIALS:
        return BASELINE_PROXY
    rows = [r for r in proxy_correlations(complete, candidates) if not math.isnan(r.kendall_tau)]
    return max(rows, key=lambda r: r.kendall_tau).proxy if rows else BASELINE_PROXY


def screen_counts(trials: Iterable[FrozenTrial]) -> dict[str, tuple[int, int]]:
    """Per screening proxy: ``(trials, candidates)`` screened by the finished (complete or pruned) trials.

    Each such trial evaluated one of its candidates; a failed trial's retry inherits its screening, so
    failed trials are left out.
    """
    counts: dict[str, tuple[int, int]] = {}
    for t in trials:
        proxy = t.user_attrs.get(SCREEN_PROXY_ATTR)
        if proxy and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            n, pool = counts.get(str(proxy), (0, 0))
            counts[str(proxy)] = (n + 1, pool + int(t.user_attrs.get(SCREEN_POOL_ATTR, 0)))
    return counts


def record_proxies(
    trial: Trial, tracker: StudyTracker, run_id: str, model: nn.Module, batch: tuple[Tensor, Tensor],
    names: Sequence[str], *, seed: int,
) -> dict[str, ProxyScore]:  # fmt: skip
    """Score ``model`` (untouched: see ``score_proxies``) and record each proxy on the trial and its MLflow run.

    MLflow gets ``proxy.<name>`` (finite values only) and ``proxy.<name>.ms``; the trial the
    user attribute ``proxy.<name>``, which the study's validation and ``proxy: auto`` read.
    """
    scores = score_proxies(model, batch, names, seed=seed)
    metrics: dict[str, float] = {}
    for name, score in scores.items():
        trial.set_user_attr(proxy_attr(name), score.value if math.isfinite(score.value) else -math.inf)
        if math.isfinite(score.value):
            metrics[proxy_attr(name)] = score.value
        metrics[f"{proxy_attr(name)}.ms"] = score.ms
    tracker.log(run_id, metrics=metrics)
    return scores
