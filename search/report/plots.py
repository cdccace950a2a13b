"""The report's figures as PNG files (for papers, and embedded in the HTML report).

The accuracy-vs-latency scatter is ``pareto.plot_front``; this module adds the block
frequencies, the parameter importances and the hypervolume (or best-so-far) history.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blocknas.search.figures import DPI, pyplot, save_figure

from .data import BlockCount, Hypervolume, Importances

__all__ = ["DPI", "plot_best_history", "plot_blocks", "plot_hypervolume", "plot_importances"]

_FRONT_COLOR = "tab:red"
_ALL_COLOR = "tab:blue"


def plot_blocks(counts: Sequence[BlockCount], path: str | Path, title: str) -> Path:
    """One panel per stage: each block type's share on the front next to its share among all trials."""
    plt = pyplot()
    stages = sorted({c.stage for c in counts}) or [0]
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages) + 0.6, 3.4), squeeze=False, sharey=True)
    for ax, stage in zip(axes[0], stages):
        rows = [c for c in counts if c.stage == stage]
        xs = range(len(rows))
        ax.bar([x - 0.2 for x in xs], [c.all_share for c in rows], 0.4, color=_ALL_COLOR, alpha=0.6, label="all trials")
        ax.bar([x + 0.2 for x in xs], [c.front_share for c in rows], 0.4, color=_FRONT_COLOR, label="Pareto front")
        ax.set_xticks(list(xs), [c.block for c in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"stage {stage}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("share of trials")
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_importances(importances: Sequence[Importances], path: str | Path, title: str, *, top: int = 12) -> Path:
    """One horizontal bar panel per objective (the ``top`` most important parameters, or why there are none)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(importances), figsize=(4.4 * len(importances), 3.6), squeeze=False)
    for ax, imp in zip(axes[0], importances):
        ax.set_title(imp.objective, fontsize=9)
        if imp.missing:
            ax.text(0.5, 0.5, imp.missing, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
            ax.set_axis_off()
            continue
        items = list(imp.values.items())[:top][::-1]
        ax.barh([k for k, _ in items], [v for _, v in items], color=_ALL_COLOR)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("importance (normalized)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_hypervolume(hv: Hypervolume, path: str | Path, title: str) -> Path:
    """Hypervolume after each complete feasible trial (a step plot)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    if hv.trials:
        ax.step(hv.trials, hv.values, where="post", color=_FRONT_COLOR, marker="o", markersize=3)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume (accuracy × ms)")
    ax.set_title(
        f"{title}\nreference point: accuracy {hv.reference[0]:g}, latency {hv.reference[1]:.4g} ms", fontsize=9
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_best_history(trials: Sequence[int], values: Sequence[float], path: str | Path, title: str) -> Path:
    """Single objective: each complete trial's accuracy and the best so far."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    best = [max(values[: i + 1]) for i in range(len(values))]
    if trials:
        ax.scatter(trials, values, color=_ALL_COLOR, alpha=0.6, label="trial")
        ax.step(trials, best, where="post", color=_FRONT_COLOR, label="best so far")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
