"""The plan of an ablation: every variant at the widths it is trained with, and how its budget match went.

A plan is computed once, by the worker that creates the study, and stored in the study's
user attributes; resumes and other workers load it. That matters for latency matching,
whose measurements differ from run to run: every worker must train the same networks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from blocknas.blocks import ArchConfig

from .budget_match import WidthMatch, match_width
from .config import AblationConfig, Level, MatchConfig, Variant, build_variants

__all__ = ["PlannedVariant", "cost_measure", "make_plan", "plan_from_json", "plan_to_json"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedVariant:
    """A variant as it will be trained.

    Attributes:
        name: ``block=separable,kernel_size=5``; the Optuna ``variant`` parameter.
        levels: Factor → level.
        arch: The architecture trained (width-scaled when there is a budget match).
        is_base: Every factor at its base level (the budget target, never scaled).
        match: The budget match outcome, ``None`` without a budget match.
        trained: ``False`` for an unmatched variant under ``on_unmatched: skip``.
    """

    name: str
    levels: dict[str, Level]
    arch: ArchConfig
    is_base: bool
    match: WidthMatch | None = None
    trained: bool = True

    def budget(self, metric: str | None) -> str:
        """Budget column text: ``target``, ``matched (+1.2%)``, ``not matched (achieved X, +Y%)``."""
        if self.match is None:
            return ""
        fmt = "{:.3f} ms".format if metric == "latency" else "{:,.0f}".format
        if self.is_base:
            return f"target ({fmt(self.match.target)})"
        text = self.match.describe(fmt)
        return text if self.trained else f"{text}; not trained"


def cost_measure(metric: str) -> Callable[[ArchConfig], float]:
    """The analytic measure for ``params`` / ``macs``."""
    if metric == "params":
        return lambda arch: float(arch.params())
    if metric == "macs":
        return lambda arch: float(arch.macs())
    raise ValueError(f"{metric!r} is not analytic; pass a latency measure")


def make_plan(
    config: AblationConfig, base: ArchConfig, *, latency_measure: Callable[[ArchConfig], float] | None = None
) -> list[PlannedVariant]:
    """Build every variant and, with a budget match, scale each one to the base variant's budget.

    Args:
        config: The ablation.
        base: The resolved base architecture.
        latency_measure: ``arch -> p50 ms``; needed only for ``match: latency``.
    """
    variants = build_variants(config, base)
    matching = config.matching
    if matching is None:
        return [PlannedVariant(v.name, v.levels, v.arch, v.is_base) for v in variants]
    measure = latency_measure if matching.metric == "latency" else cost_measure(matching.metric)
    if measure is None:
        raise ValueError("match: latency needs a latency_measure")
    target = measure(variants[0].arch)  # variants[0] is the base variant
    return [_matched(v, target, measure, matching, config.on_unmatched) for v in variants]


def _matched(
    variant: Variant, target: float, measure: Callable[[ArchConfig], float], matching: MatchConfig, on_unmatched: str
) -> PlannedVariant:
    if variant.is_base:
        match = WidthMatch(variant.arch, 1.0, target, target, matching.tolerance, 1)
    else:
        match = match_width(
            variant.arch,
            target,
            measure,
            tolerance=matching.tolerance,
            max_steps=matching.steps,
            bounds=(matching.min_multiplier, matching.max_multiplier),
        )
    log.info("%s: width x%.3f, %s %s", variant.name, match.multiplier, matching.metric, match.describe())
    trained = match.matched or on_unmatched == "train"
    return PlannedVariant(variant.name, variant.levels, match.arch, variant.is_base, match, trained)


def plan_to_json(plan: list[PlannedVariant]) -> list[dict[str, Any]]:
    """Plain, JSON-safe form (for the study's user attributes)."""
    out = []
    for v in plan:
        item: dict[str, Any] = {
            "name": v.name,
            "levels": v.levels,
            "arch": v.arch.to_dict(),
            "is_base": v.is_base,
            "trained": v.trained,
        }
        if v.match is not None:
            m = v.match
            item["match"] = {
                "multiplier": m.multiplier,
                "target": m.target,
                "achieved": m.achieved,
                "tolerance": m.tolerance,
                "evaluations": m.evaluations,
            }
        out.append(item)
    return out


def plan_from_json(items: list[dict[str, Any]]) -> list[PlannedVariant]:
    """Inverse of :func:`plan_to_json`."""
    plan = []
    for item in items:
        arch = ArchConfig.from_dict(item["arch"])
        match = WidthMatch(arch, **item["match"]) if "match" in item else None
        plan.append(PlannedVariant(item["name"], dict(item["levels"]), arch, item["is_base"], match, item["trained"]))
    return plan
