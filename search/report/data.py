"""The numbers behind a study report: trial counts, block frequencies, importances, hypervolume.

Pure functions of an Optuna study (and of MLflow runs already fetched), so each can be
checked against a hand computation.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from blocknas.search.study import ARCH_ATTR, BASELINE_ATTR, retried_trials
from blocknas.search.study.attrs import OVER_BUDGET_ATTR
from blocknas.search.study.tally import outcome
from blocknas.search.tracking.names import FINGERPRINT_ID_TAG, FINGERPRINT_TAG_PREFIX

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "BlockCount",
    "Fingerprint",
    "Hypervolume",
    "Importances",
    "block_frequency",
    "fingerprints",
    "flat_scores",
    "hypervolume_2d",
    "hypervolume_history",
    "is_feasible",
    "objective_names",
    "param_importances",
    "sampled_complete",
    "state_counts",
]

log = logging.getLogger(__name__)

MIN_IMPORTANCE_TRIALS = 5  # fewer sampled complete trials than this and importances are noise
REFERENCE_LATENCY_FACTOR = 1.1  # hypervolume reference latency = this × the slowest feasible trial


def objective_names(study: optuna.Study) -> list[str]:
    """The study's metric names (``accuracy``, ``latency_ms``), or ``objective_<i>`` where unset."""
    names = study.metric_names
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def is_feasible(trial: FrozenTrial) -> bool:
    """A trial is feasible when every constraint value is zero or less (Optuna's convention)."""
    return all(v <= 0 for v in trial.constraints.values())


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by outcome: ``complete``, ``over budget``, ``pruned``, ``failed``, then those that do not count
    toward ``n_trials`` (:mod:`blocknas.search.study.tally`): ``retried`` (failed, their retry counts),
    ``discarded`` (surplus, never run), ``running``, ``waiting``."""
    counts: Counter[str] = Counter()
    trials = study.get_trials(deepcopy=False)
    retried = retried_trials(trials)
    for trial in trials:
        where = outcome(trial, retried)
        if where != "counted":
            counts["discarded" if where == "surplus" else where] += 1
        elif trial.state == TrialState.PRUNED:
            counts["over budget" if OVER_BUDGET_ATTR in trial.user_attrs else "pruned"] += 1
        else:
            counts["failed" if trial.state == TrialState.FAIL else "complete"] += 1
    order = ("complete", "over budget", "pruned", "failed", "retried", "discarded", "running", "waiting")
    return {k: counts[k] for k in order if counts[k]}


# -- blocks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockCount:
    """How often ``block`` is the block of stage ``stage`` on the front and among all trials."""

    stage: int
    block: str
    front: int
    front_total: int
    all: int
    all_total: int

    @property
    def front_share(self) -> float:
        return self.front / self.front_total if self.front_total else 0.0

    @property
    def all_share(self) -> float:
        return self.all / self.all_total if self.all_total else 0.0


def _stage_blocks(trial: FrozenTrial) -> list[str]:
    arch = trial.user_attrs.get(ARCH_ATTR) or {}
    return [str(stage.get("block", "?")) for stage in arch.get("stages", ())]


def block_frequency(trials: Iterable[FrozenTrial], front: Iterable[FrozenTrial]) -> list[BlockCount]:
    """Per stage and block type: count on the front vs among ``trials`` (those with an architecture).

    Args:
        trials: Every trial to count (complete, over budget, failed alike: what was sampled).
        front: The Pareto-optimal trials.

    Returns:
        One row per (stage, block) seen anywhere, by stage then by descending overall count.
    """
    all_counts: Counter[tuple[int, str]] = Counter()
    front_counts: Counter[tuple[int, str]] = Counter()
    all_totals: Counter[int] = Counter()
    front_totals: Counter[int] = Counter()
    for source, counts, totals in ((trials, all_counts, all_totals), (front, front_counts, front_totals)):
        for trial in source:
            for stage, block in enumerate(_stage_blocks(trial)):
                counts[stage, block] += 1
                totals[stage] += 1
    keys = sorted(set(all_counts) | set(front_counts), key=lambda k: (k[0], -all_counts[k], k[1]))
    return [
        BlockCount(
            stage, block, front_counts[stage, block], front_totals[stage], all_counts[stage, block], all_totals[stage]
        )
        for stage, block in keys
    ]


# -- scores that rank nothing ----------------------------------------------------------------

CHANCE_MARGIN = 1.1
"""A trial scores "at chance" up to this many times ``1 / num_classes``."""


def flat_scores(trials: Iterable[FrozenTrial]) -> str | None:
    """Why the accuracies of the complete trials (two or more) rank nothing: all at chance, or all equal.

    Then the front is decided by latency alone, which a user must be told: the usual causes are a
    training budget too small for the data (epochs, samples) or labels that do not match the images.
    """
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    if len(complete) < 2:
        return None
    accuracies = [float(t.values[0]) for t in complete]
    classes = {(t.user_attrs.get(ARCH_ATTR) or {}).get("num_classes") for t in complete}
    fix = "train longer (train.epochs), on more images (data.max_train_samples), or check the labels"
    if len(classes) == 1 and isinstance(k := classes.pop(), int) and k > 1:
        if max(accuracies) <= CHANCE_MARGIN / k:
            return (
                f"all {len(complete)} complete trials scored at chance (best {max(accuracies):.1%}; 1 of {k} classes "
                f"is {1 / k:.1%}): the networks learned nothing, so the front ranks latency alone; {fix}"
            )
    if max(accuracies) - min(accuracies) < 1e-9:
        return (
            f"all {len(complete)} complete trials scored the same accuracy ({accuracies[0]:.4f}), so the front "
            f"ranks latency alone; {fix}"
        )
    return None


# -- importances ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Importances:
    """Parameter importances for one objective, or why there are none (``missing``)."""

    objective: str
    values: dict[str, float] = field(default_factory=dict)
    missing: str | None = None


def sampled_complete(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials whose parameters were sampled (baselines excluded): what importances are computed over."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.distributions and BASELINE_ATTR not in t.user_attrs
    ]


def param_importances(
    study: optuna.Study,
    *,
    evaluator: optuna.importance.BaseImportanceEvaluator | None = None,
    min_trials: int = MIN_IMPORTANCE_TRIALS,
) -> list[Importances]:
    """Importances of the sampled parameters for each objective, with Optuna's evaluator.

    The default evaluator, PED-ANOVA, handles define-by-run spaces: a parameter that a
    trial did not sample (``s1.inverted_residual.expand_ratio`` when stage 1 is not an
    inverted residual) puts the trial in that parameter's "inactive" regime. It ranks by
    lower-is-better, so a maximized objective is negated. Baseline trials sample nothing
    and are not counted.

    Args:
        study: The study.
        evaluator: Any ``optuna.importance`` evaluator; default PED-ANOVA.
        min_trials: Fewer complete, sampled trials than this and an objective gets
            ``missing`` (with the reason) instead of numbers.
    """
    names = objective_names(study)
    sampled = sampled_complete(study)
    if len(sampled) < min_trials:
        reason = (
            f"too few trials: {len(sampled)} complete trial(s) with sampled parameters, "
            f"importances need at least {min_trials}"
        )
        return [Importances(name, missing=reason) for name in names]
    out = []
    for i, (name, direction) in enumerate(zip(names, study.directions)):
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        out.append(_importances_for(study, name, lambda t, i=i, sign=sign: sign * t.values[i], evaluator))
    return out


def _importances_for(
    study: optuna.Study, name: str, target: Any, evaluator: optuna.importance.BaseImportanceEvaluator | None
) -> Importances:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample warnings: the report states the trial count
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, target=target)
    except (ValueError, RuntimeError) as exc:
        log.warning("no parameter importances for %s: %s", name, exc)
        return Importances(name, missing=f"Optuna could not compute them: {exc}")
    if not values:
        return Importances(name, missing="no parameter was sampled in the complete trials")
    return Importances(name, values=dict(values))


# -- hypervolume ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypervolume:
    """Hypervolume after each complete feasible trial, in (accuracy ↑, latency ↓) space.

    Attributes:
        trials: Trial numbers, in order.
        values: Hypervolume (accuracy × ms) of the front of the trials up to each one.
        reference: ``(accuracy, latency_ms)`` of the reference point.
    """

    trials: list[int]
    values: list[float]
    reference: tuple[float, float]

    @property
    def final(self) -> float:
        return self.values[-1] if self.values else 0.0

    @property
    def normalized(self) -> float:
        """The final hypervolume as a share of the box between the reference point and (1, 0 ms)."""
        box = (1.0 - self.reference[0]) * self.reference[1]
        return self.final / box if box > 0 else 0.0


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``(accuracy, latency)`` points and bounded by ``reference``.

    A sweep by increasing latency: between one point's latency and the next one's, the
    dominated height is the best accuracy among the points seen so far. Points no better
    than the reference in either coordinate add nothing.
    """
    ref_acc, ref_lat = reference
    inside = sorted((lat, acc) for acc, lat in points if acc > ref_acc and lat < ref_lat)
    area, best_acc = 0.0, ref_acc
    for (lat, acc), next_lat in zip(inside, [p[0] for p in inside[1:]] + [ref_lat]):
        best_acc = max(best_acc, acc)
        area += (next_lat - lat) * (best_acc - ref_acc)
    return area


def hypervolume_history(study: optuna.Study, *, reference: tuple[float, float] | None = None) -> Hypervolume | None:
    """Hypervolume over complete feasible trials in trial order; ``None`` unless the study has 2 objectives.

    The default reference point is accuracy 0 and 1.1 × the slowest complete feasible
    trial's latency, so every such trial contributes; pass ``reference`` to compare
    studies on the same scale.
    """
    if len(study.directions) != 2:
        return None
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t) and t.values]
    points = [(float(t.values[0]), float(t.values[1])) for t in trials]
    points = [p for p in points if all(math.isfinite(v) for v in p)]
    if reference is None:
        slowest = max((lat for _, lat in points), default=0.0)
        reference = (0.0, REFERENCE_LATENCY_FACTOR * slowest)
    values = [hypervolume_2d(points[: i + 1], reference) for i in range(len(points))]
    return Hypervolume([t.number for t in trials[: len(points)]], values, reference)


# -- fingerprints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """A device fingerprint recorded with latencies, and how many trial runs carry it."""

    id: str
    values: dict[str, str]
    runs: int


def fingerprints(run_tags: Iterable[dict[str, str]]) -> list[Fingerprint]:
    """Distinct device fingerprints among MLflow run tags (``latency.fp.*``), most used first."""
    found: dict[str, dict[str, str]] = {}
    counts: Counter[str] = Counter()
    for tags in run_tags:
        values = {
            k.removeprefix(FINGERPRINT_TAG_PREFIX): v for k, v in tags.items() if k.startswith(FINGERPRINT_TAG_PREFIX)
        }
        if not values:
            continue
        fid = tags.get(FINGERPRINT_ID_TAG, "?")
        found.setdefault(fid, dict(sorted(values.items())))
        counts[fid] += 1
    return [Fingerprint(fid, found[fid], n) for fid, n in counts.most_common()]
