"""The report's answer to blocknas's question: which block gives the best accuracy for a latency budget?

A network is filed under its *main block*: the block of most of its stages (a tie goes to the
block of the later stage, where most of the compute is). The scatter colours every complete
trial by its main block and, one panel per stage, by that stage's block; the table gives, for a
few latency budgets, each block's best accuracy within the budget. Warnings say when the page
cannot be trusted: a front made only of baselines, accuracies that rank nothing, importances or
correlations from too few trials.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocknas.search.figures import pyplot, save_figure
from blocknas.search.markdown import md_text
from blocknas.search.study import ARCH_ATTR, BASELINE_ATTR, LATENCY_ATTR, front_trials, proxy_correlations

from .data import Importances, flat_scores, is_feasible, sampled_complete

__all__ = [
    "FEW_TRIALS",
    "BlockBest",
    "answer_figures",
    "answer_section",
    "best_per_budget",
    "main_block",
    "plot_block_scatter",
    "report_warnings",
    "warnings_section",
]

FEW_TRIALS = 20
"""Fewer sampled complete trials than this and importances and rank correlations are rough (a warning says so)."""
SCATTER_NAME = "blocks_scatter.png"
BUDGET_QUANTILES = (0.25, 0.5, 0.75, 1.0)


def _blocks(trial: FrozenTrial) -> list[str]:
    arch = trial.user_attrs.get(ARCH_ATTR) or {}
    return [str(stage.get("block", "?")) for stage in arch.get("stages", ())]


def main_block(blocks: Sequence[str]) -> str:
    """The block of most stages; a tie goes to the one of the later stage (``?`` for no stage)."""
    if not blocks:
        return "?"
    counts = Counter(blocks)
    top = max(counts.values())
    return next(block for block in reversed(blocks) if counts[block] == top)


def _placed(study: optuna.Study) -> list[FrozenTrial]:
    """Complete, feasible trials with an architecture, an accuracy and a latency: the scatter's points."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values and is_feasible(t) and LATENCY_ATTR in t.user_attrs and _blocks(t)
    ]


@dataclass(frozen=True)
class BlockBest:
    """Per latency budget, each main block's best trial within it (``None``: no network of that block fits)."""

    budget_ms: float
    best: dict[str, FrozenTrial | None]

    def winner(self) -> str | None:
        """The block with the best accuracy within the budget."""
        fits = {block: t for block, t in self.best.items() if t is not None}
        return max(fits, key=lambda block: float(fits[block].values[0])) if fits else None


def best_per_budget(trials: Sequence[FrozenTrial], budgets: Sequence[float] | None = None) -> list[BlockBest]:
    """Each main block's most accurate trial at or under each latency budget.

    Args:
        trials: Complete feasible trials with a latency (``_placed``'s).
        budgets: Latency budgets in ms; default the quartiles of the trials' latencies (3 significant digits).
    """
    if not trials:
        return []
    latency = {t.number: float(t.user_attrs[LATENCY_ATTR]) for t in trials}
    if budgets is None:
        ordered = sorted(latency.values())
        picked = [ordered[max(0, math.ceil(q * len(ordered)) - 1)] for q in BUDGET_QUANTILES]
        budgets = sorted({float(f"{b:.3g}") if b < ordered[-1] else b for b in picked})
    blocks = sorted({main_block(_blocks(t)) for t in trials})
    rows = []
    for budget in budgets:
        best: dict[str, FrozenTrial | None] = {}
        for block in blocks:
            fits = [t for t in trials if latency[t.number] <= budget and main_block(_blocks(t)) == block]
            best[block] = max(fits, key=lambda t: float(t.values[0]), default=None)
        rows.append(BlockBest(budget, best))
    return rows


def plot_block_scatter(study: optuna.Study, path: str | Path) -> Path:
    """Accuracy vs latency coloured by main block, then one panel per stage coloured by that stage's block;
    the Pareto front drawn on each, baselines as stars."""
    trials = _placed(study)
    n_stages = max((len(_blocks(t)) for t in trials), default=0)
    names = sorted({b for t in trials for b in _blocks(t)})
    colour = {block: f"C{i % 10}" for i, block in enumerate(names)}
    front = sorted((t for t in front_trials(study) if t in trials), key=lambda t: float(t.user_attrs[LATENCY_ATTR]))
    plt = pyplot()
    panels = 1 + n_stages
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels + 0.4, 3.6), squeeze=False, sharey=True)
    for p, ax in enumerate(axes[0]):
        labels = [main_block(b) if p == 0 else (b[p - 1] if p <= len(b) else "?") for b in map(_blocks, trials)]
        for block in names:
            mine = [t for t, label in zip(trials, labels) if label == block]
            for baseline, marker in ((False, "o"), (True, "*")):
                shown = [t for t in mine if (BASELINE_ATTR in t.user_attrs) == baseline]
                if shown:
                    ax.scatter(
                        [float(t.user_attrs[LATENCY_ATTR]) for t in shown],
                        [float(t.values[0]) for t in shown],
                        color=colour[block], marker=marker, s=120 if baseline else 28, alpha=0.8,
                        edgecolor="black" if baseline else "none",
                    )  # fmt: skip
        if front:
            ax.step([float(t.user_attrs[LATENCY_ATTR]) for t in front], [float(t.values[0]) for t in front],
                    where="post", color="black", linewidth=1, label="Pareto front")  # fmt: skip
        ax.set_title("main block (most stages)" if p == 0 else f"stage {p - 1}'s block", fontsize=9)
        ax.set_xlabel("latency (ms)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    for block in names:  # every block in the legend, whatever the first panel shows
        axes[0][0].scatter([], [], color=colour[block], s=28, label=block)
    if trials:
        axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{study.study_name}: accuracy vs latency by block (stars: baselines)", fontsize=10)
    return save_figure(fig, path)


def answer_figures(study: optuna.Study, folder: Path) -> list[Path]:
    """The scatter by block, when there is a trial to draw."""
    return [plot_block_scatter(study, folder / SCATTER_NAME)] if _placed(study) else []


def answer_section(study: optuna.Study) -> str:
    """Markdown: the scatter by block and the table of the best accuracy per latency budget, per block."""
    lines = ["## Which block wins, per latency budget\n"]
    trials = _placed(study)
    if not trials:
        return lines[0] + "\nNo complete feasible trial yet.\n"
    rows = best_per_budget(trials)
    blocks = list(rows[0].best)
    lines += [
        f"![accuracy vs latency by block]({SCATTER_NAME})\n",
        "Each network is filed under its main block: the block of most of its stages (a tie goes to the later "
        "stage's). The left panel colours the complete trials by it, the others by each stage's own block. "
        "The table gives, for latency budgets at the quartiles of the trials' latencies, the best accuracy of "
        "each main block within the budget (trial number in brackets; — : no network of that block fits).\n",
        "| latency ≤ ms | " + " | ".join(md_text(b) for b in blocks) + " | best |",
        "|---:|" + "---:|" * len(blocks) + "---|",
    ]
    for row in rows:
        cells = [f"{float(t.values[0]):.4f} (t{t.number})" if t else "—" for t in row.best.values()]
        lines.append(f"| {row.budget_ms:.4g} | " + " | ".join(cells) + f" | {md_text(row.winner() or '—')} |")
    return "\n".join(lines) + "\n"


def report_warnings(study: optuna.Study, importances: Sequence[Importances]) -> list[str]:
    """What makes the page's answer weak: a front of baselines only, flat accuracies, estimates from few trials
    (``importances``: the report's, computed once)."""
    trials = study.get_trials(deepcopy=False)
    found = []
    front = front_trials(study)
    if front and all(BASELINE_ATTR in t.user_attrs for t in front):
        names = ", ".join(str(t.user_attrs[BASELINE_ATTR]) for t in front)
        found.append(
            f"the Pareto front is made only of baselines ({names}): no sampled network beat them; run more "
            "trials, train longer, or widen the space"
        )
    if (flat := flat_scores(trials)) is not None:
        found.append(flat)
    sampled = len(sampled_complete(study))
    if any(not imp.missing for imp in importances) and sampled < FEW_TRIALS:
        found.append(
            f"the parameter importances come from only {sampled} sampled complete trials (fewer than {FEW_TRIALS}): "
            "a rough ranking, not a measurement"
        )
    few = [row for row in proxy_correlations(trials) if 0 < row.n < FEW_TRIALS]
    if few:
        found.append(
            f"the proxies' rank correlations and p-values come from only {few[0].n} trials (fewer than "
            f"{FEW_TRIALS}): their intervals are wide"
        )
    return found


def warnings_section(study: optuna.Study, importances: Sequence[Importances]) -> list[str]:
    """:func:`report_warnings` as a Markdown section right under the header, or no section when there is none."""
    found = report_warnings(study, importances)
    return ["\n".join(f"> **Warning:** {md_text(text)}\n>" for text in found).rstrip(">\n") + "\n"] if found else []
