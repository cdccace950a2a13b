"""Studies: config, runner, objective, trial attribute keys, Pareto front and workers."""

from __future__ import annotations

from .config import Constraints, StudyBase, StudyConfig, default_storage_url, load_study_config
from .objective import ARCH_ATTR, BASELINE_ATTR, FINGERPRINT_ATTR, Objective, latency_fingerprints, trial_tags
from .pareto import (
    FrontRow,
    draw_front,
    export_front,
    front_rows,
    front_table,
    front_trials,
    latency_source,
    plot_front,
)
from .runner import SearchResult, open_study, optimize_until_done, run_search, trial_counts
from .workers import launch_workers, threads_per_worker

__all__ = [
    "ARCH_ATTR",
    "BASELINE_ATTR",
    "Constraints",
    "FINGERPRINT_ATTR",
    "FrontRow",
    "Objective",
    "SearchResult",
    "StudyBase",
    "StudyConfig",
    "default_storage_url",
    "draw_front",
    "export_front",
    "front_rows",
    "front_table",
    "front_trials",
    "latency_fingerprints",
    "latency_source",
    "launch_workers",
    "load_study_config",
    "open_study",
    "optimize_until_done",
    "plot_front",
    "run_search",
    "threads_per_worker",
    "trial_counts",
    "trial_tags",
]
