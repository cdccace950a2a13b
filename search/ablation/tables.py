"""The ablation report: a table per factor (Markdown and CSV) and an accuracy-vs-latency plot.

Pure functions of the plan and the per-cell results, so the numbers can be checked
against a hand computation without running anything.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from blocknas.search.figures import pyplot, save_figure
from blocknas.search.markdown import md_code, md_text

from .config import AblationConfig, format_level
from .plan import PlannedVariant
from .stats import PairedDifference, mean_std, paired_difference

__all__ = [
    "CellResult",
    "LevelPoint",
    "LevelRow",
    "cells_csv",
    "factor_rows",
    "factors_csv",
    "plot_levels",
    "plot_points",
    "report_markdown",
    "variants_csv",
]


@dataclass(frozen=True)
class CellResult:
    """One variant × seed: its accuracy (``None`` unless it finished) and measured latency p50."""

    variant: str
    seed: int
    accuracy: float | None
    latency_ms: float | None
    state: str
    trial: int | None = None


@dataclass(frozen=True)
class LevelRow:
    """One level of one factor, over the variants that have it and the seeds they completed.

    In a grid a level spans several variants (the other factors vary); its per-seed
    accuracy is the mean over them (the factor's main effect). One-at-a-time, it is the
    single variant with the other factors at base.
    """

    factor: str
    level: str
    is_base: bool
    variants: tuple[PlannedVariant, ...]
    accuracy: dict[int, float]
    diff: PairedDifference | None
    latency_ms: float
    params: float
    macs: float

    @property
    def seeds(self) -> int:
        return len(self.accuracy)

    @property
    def accuracy_mean_std(self) -> tuple[float, float]:
        return mean_std(list(self.accuracy.values()))

    @property
    def multipliers(self) -> str:
        found = sorted({v.match.multiplier for v in self.variants if v.match is not None})
        return ", ".join(f"{m:.2f}" for m in found)

    def budget(self, metric: str | None) -> str:
        return "; ".join(dict.fromkeys(v.budget(metric) for v in self.variants if v.budget(metric)))


def _members(config: AblationConfig, plan: Sequence[PlannedVariant], factor: str, level: str) -> list[PlannedVariant]:
    base = next(v for v in plan if v.is_base).levels
    return [
        v
        for v in plan
        if format_level(v.levels[factor]) == level
        and (config.design == "grid" or all(_same_level(v.levels[f], base[f]) for f in v.levels if f != factor))
    ]


def _per_seed_accuracy(members: Sequence[PlannedVariant], cells: Sequence[CellResult]) -> dict[int, float]:
    """Mean accuracy per seed over ``members``, for seeds that every member completed."""
    by_cell = {(c.variant, c.seed): c.accuracy for c in cells if c.accuracy is not None}
    seeds = sorted({c.seed for c in cells})
    out = {}
    for seed in seeds:
        values = [by_cell.get((v.name, seed)) for v in members]
        if members and all(a is not None for a in values):
            out[seed] = statistics.fmean(a for a in values if a is not None)
    return out


def factor_rows(
    config: AblationConfig, plan: Sequence[PlannedVariant], cells: Sequence[CellResult], factor: str
) -> list[LevelRow]:
    """Rows of one factor's table, in the order the config lists the levels."""
    base_level = format_level(next(v for v in plan if v.is_base).levels[factor])
    rows, base_acc = [], None
    for level in (format_level(lv) for lv in config.factors[factor].levels):
        members = _members(config, plan, factor, level)
        accuracy = _per_seed_accuracy(members, cells)
        names = {v.name for v in members}
        latencies = [
            c.latency_ms for c in cells if c.variant in names and c.latency_ms is not None and c.accuracy is not None
        ]
        is_base = level == base_level
        if is_base:
            base_acc = accuracy
        rows.append(
            LevelRow(
                factor,
                level,
                is_base,
                tuple(members),
                accuracy,
                None,
                statistics.median(latencies) if latencies else math.nan,
                statistics.fmean(v.arch.params() for v in members) if members else math.nan,
                statistics.fmean(v.arch.macs() for v in members) if members else math.nan,
            )
        )
    assert base_acc is not None
    return [
        r if r.is_base else replace(r, diff=paired_difference(r.accuracy, base_acc, config.confidence)) for r in rows
    ]


def _same_level(a: Any, b: Any) -> bool:
    return format_level(a) == format_level(b)


# -- text ---------------------------------------------------------------------------------


def _si(value: float) -> str:
    if math.isnan(value):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{100 * mean:.2f}" if math.isnan(std) else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _diff_text(diff: PairedDifference | None) -> str:
    if diff is None:
        return "—"
    if diff.n == 0:
        return "no paired seeds"
    if not diff.has_interval:
        return f"{100 * diff.mean:+.2f} (1 seed: no interval)"
    star = " *" if diff.excludes_zero else ""
    return f"{100 * diff.mean:+.2f} [{100 * diff.low:+.2f}, {100 * diff.high:+.2f}]{star}"


def factor_table(rows: Sequence[LevelRow], metric: str | None, confidence: float) -> str:
    """One factor as a Markdown table (accuracy in %, Δ in percentage points)."""
    base = next(r for r in rows if r.is_base)
    budget = metric is not None
    head = [
        "level",
        "seeds",
        "accuracy %",
        f"Δ vs {md_text(base.level)} pp [{confidence:.0%} CI]",
        "latency p50 ms",
        "params",
        "MACs",
    ]
    head += ["width ×", f"budget ({metric})"] if budget else []
    align = ["---", *["---:"] * (len(head) - 1 - budget), *["---"] * budget]  # text columns left, numbers right
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [
            f"{md_text(r.level)} (base)" if r.is_base else md_text(r.level),
            str(r.seeds),
            _pct(*r.accuracy_mean_std),
            _diff_text(r.diff),
            "—" if math.isnan(r.latency_ms) else f"{r.latency_ms:.3f}",
            _si(r.params),
            _si(r.macs),
        ]
        cells += [r.multipliers, r.budget(metric)] if budget else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_markdown(config: AblationConfig, tables: dict[str, list[LevelRow]], notes: Sequence[str]) -> str:
    """The whole report: notes, then one table per factor."""
    metric = config.matching.metric if config.matching else None
    parts = [f"# Ablation {md_code(config.name)}\n", *(f"{n}\n" for n in notes)]
    parts.append(
        f"Accuracy: validation top-1 in %, mean ± std over seeds. Δ: paired difference to the base level per seed, "
        f"in percentage points, mean [{config.confidence:.0%} t-interval, n−1 df]; * marks an interval that excludes 0.\n"
    )
    for factor, rows in tables.items():
        base = next(r for r in rows if r.is_base)
        parts.append(f"## {factor} (base level: {md_text(base.level)})\n")
        parts.append(factor_table(rows, metric, config.confidence))
    return "\n".join(parts)


def _write_csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def factors_csv(tables: dict[str, list[LevelRow]], metric: str | None) -> str:
    """Every factor's rows, raw numbers (accuracy as a fraction)."""
    header = [
        "factor",
        "level",
        "is_base",
        "seeds",
        "accuracy_mean",
        "accuracy_std",
        "diff_mean",
        "diff_std",
        "diff_low",
        "diff_high",
        "diff_excludes_zero",
        "latency_p50_ms",
        "params",
        "macs",
        "width_multipliers",
        "budget",
    ]
    rows = []
    for factor, level_rows in tables.items():
        for r in level_rows:
            d = r.diff
            rows.append(
                [
                    factor,
                    r.level,
                    r.is_base,
                    r.seeds,
                    *r.accuracy_mean_std,
                    *((d.mean, d.std, d.low, d.high, d.excludes_zero) if d else ("", "", "", "", "")),
                    r.latency_ms,
                    r.params,
                    r.macs,
                    r.multipliers,
                    r.budget(metric),
                ]
            )
    return _write_csv(header, rows)


def variants_csv(plan: Sequence[PlannedVariant], cells: Sequence[CellResult], metric: str | None) -> str:
    """One row per variant: levels, cost, budget match, accuracy over seeds."""
    factors = list(plan[0].levels)
    header = [
        "variant",
        *factors,
        "is_base",
        "trained",
        "seeds",
        "accuracy_mean",
        "accuracy_std",
        "params",
        "macs",
        "width_multiplier",
        "match_target",
        "match_achieved",
        "match_rel_error",
        "matched",
        "budget",
        "arch_hash",
    ]
    rows = []
    for v in plan:
        accuracies = [c.accuracy for c in cells if c.variant == v.name and c.accuracy is not None]
        m = v.match
        rows.append(
            [
                v.name,
                *(format_level(v.levels[f]) for f in factors),
                v.is_base,
                v.trained,
                len(accuracies),
                *mean_std(accuracies),
                v.arch.params(),
                v.arch.macs(),
                *((m.multiplier, m.target, m.achieved, m.rel_error, m.matched) if m else ("", "", "", "", "")),
                v.budget(metric),
                v.arch.short_hash(),
            ]
        )
    return _write_csv(header, rows)


def cells_csv(cells: Sequence[CellResult]) -> str:
    """The raw results, one row per variant × seed (what the statistics are computed from)."""
    rows = [
        [
            c.variant,
            c.seed,
            c.state,
            "" if c.accuracy is None else c.accuracy,
            "" if c.latency_ms is None else c.latency_ms,
            "" if c.trial is None else c.trial,
        ]
        for c in cells
    ]
    return _write_csv(["variant", "seed", "state", "accuracy", "latency_p50_ms", "trial"], rows)


@dataclass(frozen=True)
class LevelPoint:
    """One level's point in the accuracy-vs-latency plot: latency p50 and accuracy mean ± std (fractions)."""

    level: str
    latency_ms: float
    accuracy_mean: float
    accuracy_std: float
    is_base: bool = False


def plot_levels(tables: dict[str, list[LevelRow]], path: str | Path, title: str) -> Path:
    """Accuracy (mean ± std over seeds) vs latency p50, one point per level, one panel per factor."""
    panels = {
        factor: [LevelPoint(r.level, r.latency_ms, *r.accuracy_mean_std, r.is_base) for r in rows if r.seeds]
        for factor, rows in tables.items()
    }
    return plot_points(panels, path, title)


def plot_points(panels: dict[str, list[LevelPoint]], path: str | Path, title: str) -> Path:
    """The plot of :func:`plot_levels` from bare points (one panel per key), e.g. from combined ``cells.csv`` runs."""
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), dpi=120, squeeze=False)
    for ax, (factor, points) in zip(axes[0], panels.items()):
        for i, r in enumerate(points):
            std = r.accuracy_std
            ax.errorbar(
                [r.latency_ms],
                [100 * r.accuracy_mean],
                yerr=[0 if math.isnan(std) else 100 * std],
                fmt="*" if r.is_base else "o",
                markersize=12 if r.is_base else 7,
                capsize=4,
                color=f"C{i}",
                label=f"{r.level}{' (base)' if r.is_base else ''}",
            )
        ax.set_title(factor)
        ax.set_xlabel("latency p50 (ms)")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)
