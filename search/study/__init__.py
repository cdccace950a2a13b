"""Studies: config, runner, objective, trial attribute keys, Pareto front and workers.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .attrs import (
    ARCH_ATTR,
    BASELINE_ATTR,
    DEFINITION_ATTR,
    DUPLICATE_OF_ATTR,
    FAIL_REASON_ATTR,
    FINGERPRINT_ATTR,
    INTERRUPTED,
    LATENCY_ATTR,
    LATENCY_DEVICE_ATTR,
    LATENCY_MEASURED_ATTR,
    PLAN_ATTR,
    SCREEN_PROXY_ATTR,
    SEARCH_DEFINITION_ATTR,
    SURPLUS_ATTR,
    TRAINING_KEY_ATTR,
)
from .config import Constraints, StudyConfig, load_study_config
from .definition import definition_changes, definition_settings, param_names_for
from .objective import Objective
from .pareto import FrontRow, draw_front, export_front, front_rows, front_trials
from .pruning import (
    MAX_TRIALS,
    PRUNED_BY,
    ParetoAsha,
    PruningConfig,
    RungPoint,
    RungRow,
    crowding_distances,
    non_dominated_fronts,
    rank_points,
    rung_accuracy_attr,
    rung_table,
)
from .runner import SearchResult, optimize_until_done, run_search
from .screening import proxy_correlations
from .start import open_study
from .tally import retried_trials, trial_counts
from .validation import run_validation
from .validation_config import ValidateConfig
from .validation_select import SelectedNetwork
from .validation_summary import TrainingBudget, ValidatedNetwork, Validation, summarize
from .validation_work import Retraining, TrainingRecords, retrain_all
from .workers import ParallelPlan, available_cores, plan_parallel, threads_per_worker

__all__ = [
    "ARCH_ATTR",
    "BASELINE_ATTR",
    "DEFINITION_ATTR",
    "DUPLICATE_OF_ATTR",
    "FAIL_REASON_ATTR",
    "FINGERPRINT_ATTR",
    "INTERRUPTED",
    "LATENCY_ATTR",
    "LATENCY_DEVICE_ATTR",
    "LATENCY_MEASURED_ATTR",
    "MAX_TRIALS",
    "PLAN_ATTR",
    "PRUNED_BY",
    "SCREEN_PROXY_ATTR",
    "SEARCH_DEFINITION_ATTR",
    "SURPLUS_ATTR",
    "TRAINING_KEY_ATTR",
    "Constraints",
    "FrontRow",
    "Objective",
    "ParallelPlan",
    "ParetoAsha",
    "PruningConfig",
    "Retraining",
    "RungPoint",
    "RungRow",
    "SearchResult",
    "SelectedNetwork",
    "StudyConfig",
    "TrainingBudget",
    "TrainingRecords",
    "ValidateConfig",
    "ValidatedNetwork",
    "Validation",
    "available_cores",
    "crowding_distances",
    "definition_changes",
    "definition_settings",
    "draw_front",
    "export_front",
    "front_rows",
    "front_trials",
    "load_study_config",
    "non_dominated_fronts",
    "open_study",
    "optimize_until_done",
    "param_names_for",
    "plan_parallel",
    "proxy_correlations",
    "rank_points",
    "retrain_all",
    "retried_trials",
    "run_search",
    "run_validation",
    "rung_accuracy_attr",
    "rung_table",
    "summarize",
    "threads_per_worker",
    "trial_counts",
]
