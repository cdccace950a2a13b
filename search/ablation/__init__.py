"""Ablations: config, plan, runner, paired statistics, tables and budget matching.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .budget_match import match_width, scale_widths, widths
from .config import MAX_VARIANTS, AblationConfig, build_variants, load_ablation_config
from .plan import cost_measure, make_plan
from .runner import AblationResult, run_ablation
from .stats import mean_std, paired_difference
from .tables import CellResult, factor_rows

__all__ = [
    "MAX_VARIANTS",
    "AblationConfig",
    "AblationResult",
    "CellResult",
    "build_variants",
    "cost_measure",
    "factor_rows",
    "load_ablation_config",
    "make_plan",
    "match_width",
    "mean_std",
    "paired_difference",
    "run_ablation",
    "scale_widths",
    "widths",
]
