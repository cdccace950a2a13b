"""Zero-cost proxies in a study: which to compute, how well each ranks the study's own trials, and screening.

Screening (``screen: {proxy: auto | <name>, pool: K}``): each slot of the study proposes K
candidates, the first from the trial Optuna runs and the other K−1 from ``study.ask()``;
the budget checks come first, the proxy keeps the best feasible candidate, which is trained,
and the others end as PRUNED with the ``screened_out_by`` attribute (never trained). Only
the slot's representative (the trained candidate, or the host when none was feasible)
counts toward ``n_trials``.
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

from .attrs import PROXY_ATTR_PREFIX, SCREEN_COUNTED_ATTR, SCREEN_POOL_ATTR, SCREENED_OUT_ATTR

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
    "trial_counts_toward_total",
]

AUTO_MIN_TRIALS = 10  # complete trials before ``proxy: auto`` trusts a τ; ``params`` until then
BASELINE_PROXY = "params"
MAX_POOL = 1024
"""Most candidates screened per trial."""


@dataclass(frozen=True)
class ScreenConfig:
    """The study YAML's ``screen:`` mapping (absent: no screening).

    Attributes:
        proxy: ``auto`` (the proxy with the best Kendall τ on the study's complete trials once
            there are ``AUTO_MIN_TRIALS``, ``params`` before) or a registered proxy's name.
        pool: Candidates proposed per trial (K >= 2); the best by the proxy is trained.
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


def trial_counts_toward_total(trial: FrozenTrial) -> bool:
    """Whether ``trial`` counts toward ``n_trials``: a screening pool counts once, through its representative."""
    return SCREEN_POOL_ATTR not in trial.user_attrs or bool(trial.user_attrs.get(SCREEN_COUNTED_ATTR))


def screen_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Screened-out candidates per screening proxy."""
    counts: dict[str, int] = {}
    for t in trials:
        by = t.user_attrs.get(SCREENED_OUT_ATTR)
        if by:
            counts[str(by)] = counts.get(str(by), 0) + 1
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
