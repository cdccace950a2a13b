"""Pareto-aware asynchronous successive halving (``pruner: pareto_asha``) for accuracy-vs-latency studies.

Optuna's ``trial.report``/``should_prune`` do not exist for multi-objective studies, so
this pruner keeps its own records: when a trial reaches a rung it writes its validation
accuracy there as a trial user attribute (``rung_<k>_accuracy``) *before* deciding, in the
study's storage. Every worker on that storage ranks against every other worker's records,
and a worker killed mid-rung loses nothing.

Rungs sit at ``min_epochs · η^k`` epochs below the full budget (which is never a stopping
point). With ``train.time_budget_s`` a rung is at the same fraction of the budget in
seconds of training, or at its epoch count, whichever comes first (as training itself
stops at whichever budget runs out first).

At a rung the trial's point (rung accuracy ↑, its latency ↓, measured before training) is
ranked among all trials recorded at that rung (running, complete or pruned; failed trials
are left out, a retried trial records its rung again): non-dominated sorting first, where
two latencies within ``latency_tie_rel`` of each other count as equal (the measurement
noise cannot order them); inside one front, points with a larger crowding distance
(NSGA-II's, so the front's extremes first) rank higher, then higher accuracy, lower
latency, lower trial number. The trial goes on when its rank is within the top
``⌈n/η⌉`` of the ``n`` recorded points, and always while fewer than
``min_trials_per_rung`` trials reached the rung (asynchronous ASHA: decided against the
records so far, never revisited).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import check_range

from .attrs import LATENCY_ATTR, PRUNED_ACCURACY_ATTR, PRUNED_BY_ATTR, PRUNED_EPOCH_ATTR, PRUNED_RUNG_ATTR

__all__ = [
    "MAX_REDUCTION_FACTOR",
    "MAX_TRIALS",
    "PRUNED_BY",
    "ParetoAsha",
    "PruningConfig",
    "RungDecision",
    "RungPoint",
    "RungRow",
    "TrialRungs",
    "crowding_distances",
    "non_dominated_fronts",
    "rank_points",
    "rung_accuracy_attr",
    "rung_points",
    "rung_table",
]

log = logging.getLogger(__name__)

PRUNED_BY = "pareto_asha"  # value of the trial's ``pruned_by`` user attr

MAX_TRIALS = 1_000_000
"""Most trials a study may ask for (``n_trials``, ``pruning.min_trials_per_rung``)."""
MAX_REDUCTION_FACTOR = 100
"""Largest η of ``pareto_asha``."""


def rung_accuracy_attr(rung: int) -> str:
    """The trial user attribute holding a trial's validation accuracy at ``rung``."""
    return f"rung_{rung}_accuracy"


def _rung_decision_attr(rung: int) -> str:
    return f"rung_{rung}_decision"


@dataclass(frozen=True)
class PruningConfig:
    """Settings of ``pruner: pareto_asha`` (the study YAML's ``pruning:`` mapping).

    Attributes:
        min_epochs: Epochs to the first rung.
        reduction_factor: η; rungs at ``min_epochs · η^k`` epochs, the top ``1/η`` go on.
        min_trials_per_rung: Nothing is stopped at a rung before this many trials reached it.
        latency_tie_rel: Latencies within this relative difference are ties; null: the
            latency target's ``rel_precision`` (its measurement precision).
    """

    min_epochs: int = 1
    reduction_factor: int = 3
    min_trials_per_rung: int = 4
    latency_tie_rel: float | None = None

    def __post_init__(self) -> None:
        if self.min_epochs < 1:
            raise ConfigError(f"{self.min_epochs} must be >= 1", path="min_epochs")
        check_range(
            self.reduction_factor,
            "reduction_factor",
            2,
            MAX_REDUCTION_FACTOR,
            hint=" (η = 1 would never stop anything)",
        )
        check_range(self.min_trials_per_rung, "min_trials_per_rung", 1, MAX_TRIALS)
        if self.latency_tie_rel is not None and not 0 <= self.latency_tie_rel < 1:
            raise ConfigError(f"{self.latency_tie_rel} must be in [0, 1), e.g. 0.02", path="latency_tie_rel")

    def keep(self, n: int) -> int:
        """How many of the ``n`` trials recorded at a rung go on: all while ``n < min_trials_per_rung``, then ⌈n/η⌉."""
        return n if n < self.min_trials_per_rung else math.ceil(n / self.reduction_factor)

    def rung_epochs(self, epochs: int) -> list[int]:
        """Epoch counts of the stopping rungs for a full budget of ``epochs`` (the budget itself excluded)."""
        rungs, at = [], self.min_epochs
        while at < epochs:
            rungs.append(at)
            at *= self.reduction_factor
        return rungs


@dataclass(frozen=True)
class RungPoint:
    """One trial's record at a rung: accuracy (higher is better) and latency (lower is better)."""

    trial: int
    accuracy: float
    latency_ms: float


def _tied(a: float, b: float, tie_rel: float) -> bool:
    return abs(a - b) <= tie_rel * max(abs(a), abs(b))


def _dominates(a: RungPoint, b: RungPoint, tie_rel: float) -> bool:
    """``a`` is at least as good on both objectives and better on one; tied latencies are equal."""
    tied = _tied(a.latency_ms, b.latency_ms, tie_rel)
    if a.accuracy < b.accuracy or (not tied and a.latency_ms > b.latency_ms):
        return False
    return a.accuracy > b.accuracy or (not tied and a.latency_ms < b.latency_ms)


def non_dominated_fronts(points: Sequence[RungPoint], tie_rel: float = 0.0) -> list[list[RungPoint]]:
    """Points peeled into fronts: the first is not dominated by any point, the next by none of the rest, ..."""
    remaining, fronts = list(points), []
    while remaining:
        front = [p for p in remaining if not any(_dominates(q, p, tie_rel) for q in remaining if q is not p)]
        fronts.append(front)
        remaining = [p for p in remaining if all(p is not f for f in front)]
    return fronts


def crowding_distances(front: Sequence[RungPoint]) -> list[float]:
    """NSGA-II crowding distance of each point of one front: extremes infinite, others the normalised gaps."""
    n = len(front)
    distances = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for key in ("accuracy", "latency_ms"):
        order = sorted(range(n), key=lambda i: getattr(front[i], key))
        low, high = getattr(front[order[0]], key), getattr(front[order[-1]], key)
        distances[order[0]] = distances[order[-1]] = math.inf
        if high == low:
            continue
        for before, here, after in zip(order, order[1:], order[2:]):
            distances[here] += (getattr(front[after], key) - getattr(front[before], key)) / (high - low)
    return distances


def rank_points(points: Sequence[RungPoint], tie_rel: float = 0.0) -> list[RungPoint]:
    """All points, best first: by front, then crowding distance, accuracy, latency and trial number."""
    ranked: list[RungPoint] = []
    for front in non_dominated_fronts(points, tie_rel):
        crowding = crowding_distances(front)
        order = sorted(
            range(len(front)), key=lambda i: (-crowding[i], -front[i].accuracy, front[i].latency_ms, front[i].trial)
        )
        ranked.extend(front[i] for i in order)
    return ranked


@dataclass(frozen=True)
class RungDecision:
    """What was decided for one trial at one rung, stored with the trial as ``rung_<k>_decision``."""

    rung: int
    epoch: int  # epochs trained when the rung was reached
    n: int  # trials recorded at the rung, this one included
    rank: int  # 1-based position of this trial among them
    keep: int  # how many may go on: ⌈n/η⌉ (all while n < min_trials_per_rung)
    go_on: bool

    def as_attr(self) -> dict[str, object]:
        return {"epoch": self.epoch, "n": self.n, "rank": self.rank, "keep": self.keep, "continue": self.go_on}


@dataclass(frozen=True)
class ParetoAsha:
    """The pruner of one study: its settings, the full epoch budget and the latency tie tolerance."""

    config: PruningConfig
    epochs: int
    time_budget_s: float | None
    tie_rel: float

    @property
    def rungs(self) -> list[int]:
        return self.config.rung_epochs(self.epochs)

    def rungs_reached(self, epochs_done: int, elapsed_s: float) -> list[int]:
        """Rung indices whose budget ``epochs_done`` epochs after ``elapsed_s`` seconds of training have reached.

        Empty at the full budget (epochs or time), which is never a stopping point.
        """
        if epochs_done >= self.epochs or (self.time_budget_s is not None and elapsed_s >= self.time_budget_s):
            return []
        reached = []
        for k, at in enumerate(self.rungs):
            by_time = self.time_budget_s is not None and elapsed_s >= self.time_budget_s * at / self.epochs
            if epochs_done >= at or by_time:
                reached.append(k)
        return reached

    def decide(self, trial: Trial, rung: int, epoch: int, accuracy: float, latency_ms: float) -> RungDecision:
        """Record ``trial``'s accuracy at ``rung`` in the storage, then rank it against every record there."""
        trial.set_user_attr(rung_accuracy_attr(rung), accuracy)
        here = RungPoint(trial.number, accuracy, latency_ms)
        others = [p for p in rung_points(trial.study.get_trials(deepcopy=False), rung) if p.trial != trial.number]
        points = [*others, here]
        n = len(points)
        keep = self.config.keep(n)
        rank = next(i for i, p in enumerate(rank_points(points, self.tie_rel)) if p.trial == trial.number) + 1
        decision = RungDecision(rung, epoch, n, rank, keep, rank <= keep)
        trial.set_user_attr(_rung_decision_attr(rung), decision.as_attr())
        return decision

    def prune(self, trial: Trial, decision: RungDecision, accuracy: float, epochs_done: int) -> optuna.TrialPruned:
        """Mark ``trial`` as stopped by this pruner (user attrs) and return the exception that ends it."""
        trial.set_user_attr(PRUNED_BY_ATTR, PRUNED_BY)
        trial.set_user_attr(PRUNED_RUNG_ATTR, decision.rung)
        trial.set_user_attr(PRUNED_EPOCH_ATTR, epochs_done)
        trial.set_user_attr(PRUNED_ACCURACY_ATTR, accuracy)
        return optuna.TrialPruned(
            f"pareto_asha: rank {decision.rank} of {decision.n} at rung {decision.rung} "
            f"(epoch {epochs_done}); only the top {decision.keep} go on"
        )

    def start(self, trial: Trial, latency_ms: float) -> TrialRungs:
        """Follow one trial through its training; ``latency_ms`` is its latency objective."""
        return TrialRungs(self, trial, latency_ms)


@dataclass
class TrialRungs:
    """One trial's way through the rungs: records and decides at each rung its epochs reach."""

    asha: ParetoAsha
    trial: Trial
    latency_ms: float
    elapsed_s: float = 0.0
    decisions: list[RungDecision] = field(default_factory=list)

    def after_epoch(self, epochs_done: int, seconds: float, accuracy: float) -> optuna.TrialPruned | None:
        """Record and decide every rung newly reached; the exception to raise when the trial must stop.

        Args:
            epochs_done: Epochs trained so far (1 after the first).
            seconds: Time the epoch just done took (training and validation).
            accuracy: Validation accuracy after it.
        """
        self.elapsed_s += seconds
        done = {d.rung for d in self.decisions}
        for rung in self.asha.rungs_reached(epochs_done, self.elapsed_s):
            if rung in done:
                continue
            decision = self.asha.decide(self.trial, rung, epochs_done, accuracy, self.latency_ms)
            self.decisions.append(decision)
            log.info(
                "trial %d at rung %d (epoch %d): rank %d of %d, top %d go on: %s",
                self.trial.number, rung, epochs_done, decision.rank, decision.n, decision.keep,
                "continues" if decision.go_on else "pruned",
            )  # fmt: skip
            if not decision.go_on:
                return self.asha.prune(self.trial, decision, accuracy, epochs_done)
        return None


def rung_points(trials: Sequence[FrozenTrial], rung: int) -> list[RungPoint]:
    """The records at ``rung`` of every trial that is not failed and has a latency."""
    key = rung_accuracy_attr(rung)
    return [
        RungPoint(t.number, float(t.user_attrs[key]), float(t.user_attrs[LATENCY_ATTR]))
        for t in trials
        if key in t.user_attrs and LATENCY_ATTR in t.user_attrs and t.state != TrialState.FAIL
    ]


@dataclass(frozen=True)
class RungRow:
    """One rung of a study: the epochs at which trials reached it, how many entered and how many went on."""

    rung: int
    epochs: tuple[int, ...]
    entered: int
    went_on: int


def rung_table(trials: Sequence[FrozenTrial]) -> list[RungRow]:
    """Per rung, what entered it and what went on; empty when nothing was recorded.

    A trial went on when its decision there was to continue; one between its record and its
    decision counts as entered only. Failed trials are left out, as in the ranking.
    """
    rows: list[RungRow] = []
    for rung in itertools.count():
        entered = [t for t in trials if rung_accuracy_attr(rung) in t.user_attrs and t.state != TrialState.FAIL]
        if not entered:
            return rows
        decisions = [t.user_attrs.get(_rung_decision_attr(rung)) or {} for t in entered]
        epochs = tuple(sorted({int(d["epoch"]) for d in decisions if "epoch" in d}))
        rows.append(RungRow(rung, epochs, len(entered), sum(bool(d.get("continue")) for d in decisions)))
    return rows
