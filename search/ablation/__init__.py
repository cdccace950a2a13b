"""Ablations: config, plan, runner, paired statistics, tables and budget matching."""

from __future__ import annotations

from .budget_match import WidthMatch, match_width, scale_widths, widths
from .config import (
    ARCH_FACTORS,
    STAGE_FACTORS,
    AblationConfig,
    FactorConfig,
    Level,
    MatchConfig,
    Variant,
    apply_level,
    build_variants,
    definition_changes,
    format_level,
    load_ablation_config,
)
from .plan import PlannedVariant, cost_measure, make_plan, plan_from_json, plan_to_json
from .runner import AblationObjective, AblationResult, collect_cells, run_ablation
from .stats import PairedDifference, mean_std, paired_difference
from .tables import (
    CellResult,
    LevelRow,
    cells_csv,
    factor_rows,
    factors_csv,
    plot_levels,
    report_markdown,
    variants_csv,
)

__all__ = [
    "ARCH_FACTORS",
    "STAGE_FACTORS",
    "AblationConfig",
    "AblationObjective",
    "AblationResult",
    "CellResult",
    "FactorConfig",
    "Level",
    "LevelRow",
    "MatchConfig",
    "PairedDifference",
    "PlannedVariant",
    "Variant",
    "WidthMatch",
    "apply_level",
    "build_variants",
    "cells_csv",
    "collect_cells",
    "cost_measure",
    "definition_changes",
    "factor_rows",
    "factors_csv",
    "format_level",
    "load_ablation_config",
    "make_plan",
    "match_width",
    "mean_std",
    "paired_difference",
    "plan_from_json",
    "plan_to_json",
    "plot_levels",
    "report_markdown",
    "run_ablation",
    "scale_widths",
    "variants_csv",
    "widths",
]
