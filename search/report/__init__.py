"""Reports: data, HTML, plots, the terminal summary and the writer."""

from __future__ import annotations

from .data import (
    MIN_IMPORTANCE_TRIALS,
    BlockCount,
    Fingerprint,
    Hypervolume,
    Importances,
    block_frequency,
    fingerprints,
    hypervolume_2d,
    hypervolume_history,
    is_feasible,
    objective_names,
    param_importances,
    state_counts,
)
from .html import markdown_to_html, render_markdown
from .plots import DPI, plot_best_history, plot_blocks, plot_hypervolume, plot_importances
from .text import print_search_summary
from .writer import DEFAULT_UI_BASE, ReportResult, report_study, run_url, write_report

__all__ = [
    "DEFAULT_UI_BASE",
    "DPI",
    "MIN_IMPORTANCE_TRIALS",
    "BlockCount",
    "Fingerprint",
    "Hypervolume",
    "Importances",
    "ReportResult",
    "block_frequency",
    "fingerprints",
    "hypervolume_2d",
    "hypervolume_history",
    "is_feasible",
    "markdown_to_html",
    "objective_names",
    "param_importances",
    "plot_best_history",
    "plot_blocks",
    "plot_hypervolume",
    "plot_importances",
    "print_search_summary",
    "render_markdown",
    "report_study",
    "run_url",
    "state_counts",
    "write_report",
]
