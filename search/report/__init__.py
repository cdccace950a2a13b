"""Reports: data, HTML, plots, the terminal summary and the writer.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .answer import best_per_budget, main_block
from .data import block_frequency, flat_scores, hypervolume_2d, hypervolume_history, is_feasible, param_importances
from .text import print_search_summary
from .writer import ReportResult, report_study, write_report

__all__ = [
    "ReportResult",
    "best_per_budget",
    "block_frequency",
    "flat_scores",
    "hypervolume_2d",
    "hypervolume_history",
    "is_feasible",
    "main_block",
    "param_importances",
    "print_search_summary",
    "report_study",
    "write_report",
]
