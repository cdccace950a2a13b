"""The keys of the study and trial attributes a search and an ablation store in Optuna.

The keys tracking also reads (MLflow run ids, the worker, Optuna's retry history) live one
layer down, in :mod:`blocknas.search.tracking.attrs`.
"""

from __future__ import annotations

__all__ = [
    "ARCH_ATTR",
    "BASELINE_ATTR",
    "DEFINITION_ATTR",
    "DUPLICATE_OF_ATTR",
    "FAIL_REASON_ATTR",
    "FINGERPRINT_ATTR",
    "FIXED_PARAMS_ATTR",
    "INTERRUPTED",
    "LATENCY_ATTR",
    "LATENCY_CALIBRATED_ATTR",
    "LATENCY_DEVICE_ATTR",
    "LATENCY_MEASURED_ATTR",
    "LATENCY_PREDICTED_ATTR",
    "OVER_BUDGET_ATTR",
    "PLAN_ATTR",
    "PROXY_ATTR_PREFIX",
    "PRUNED_ACCURACY_ATTR",
    "PRUNED_BY_ATTR",
    "PRUNED_EPOCH_ATTR",
    "PRUNED_RUNG_ATTR",
    "SCREEN_KEPT_ATTR",
    "SCREEN_POOL_ATTR",
    "SCREEN_PROXY_ATTR",
    "SCREEN_SCORES_ATTR",
    "SEARCH_DEFINITION_ATTR",
    "SURPLUS_ATTR",
    "TRAINING_KEY_ATTR",
    "TRAIN_SECONDS_ATTR",
]

# trial user attributes
ARCH_ATTR = "arch"  # the architecture (plain dict) a trial evaluated
BASELINE_ATTR = "baseline"  # the baseline's name, for enqueued baseline trials
FINGERPRINT_ATTR = "latency_fingerprint_id"  # the device/settings the latency was measured on
LATENCY_ATTR = "latency_ms"  # the latency objective: measured p50, or the prediction in predicted mode
LATENCY_MEASURED_ATTR = "latency_measured_ms"  # the measured p50, in either mode
LATENCY_PREDICTED_ATTR = "latency_predicted_ms"  # the lookup table's prediction (predicted mode)
LATENCY_CALIBRATED_ATTR = "latency_calibrated"  # whether that prediction was calibrated
OVER_BUDGET_ATTR = "over_budget"  # which budget a rejected (never trained) candidate exceeded
SURPLUS_ATTR = "blocknas.surplus"  # a trial discarded unrun: it was numbered past n_trials (workers raced)
FAIL_REASON_ATTR = "fail_reason"  # why a trial failed: the exception, or INTERRUPTED
INTERRUPTED = "interrupted"  # the fail reason of a trial stopped by Ctrl-C / SIGTERM
TRAIN_SECONDS_ATTR = "train_seconds"  # wall time of the brief training
PROXY_ATTR_PREFIX = "proxy."  # + a proxy's name: its zero-cost score, computed before training
SCREEN_PROXY_ATTR = "screen.proxy"  # the proxy that ranked the trial's screening pool
SCREEN_POOL_ATTR = "screen.pool_size"  # candidates screened for the trial (the config's pool, or fewer at the timeout)
SCREEN_SCORES_ATTR = "screen.scores"  # each candidate's proxy score, in draw order (None: over budget or failed)
SCREEN_KEPT_ATTR = "screen.kept_score"  # the trained (kept) candidate's score (None: no candidate was scored)
TRAINING_KEY_ATTR = "training_key"  # arch hash + seed + settings digest: equal keys train identically
DUPLICATE_OF_ATTR = "duplicate_of"  # the trial whose recorded values a duplicate took instead of training
PRUNED_BY_ATTR = "pruned_by"  # the pruner that stopped the trial (``pareto_asha``)
PRUNED_RUNG_ATTR = "pruned_rung"  # the rung that stopped it
PRUNED_EPOCH_ATTR = "pruned_at_epoch"  # epochs trained when stopped
PRUNED_ACCURACY_ATTR = "pruned_accuracy"  # validation accuracy at that rung

# trial system attribute set by Optuna
FIXED_PARAMS_ATTR = "fixed_params"  # the parameters a queued trial was enqueued with

# study user attributes of an ablation
PLAN_ATTR = "ablation.plan"  # the budget-matched variants, so every worker trains the same ones
DEFINITION_ATTR = "ablation.definition"  # what a resumed ablation must share with its first run

# study user attributes of a search
SEARCH_DEFINITION_ATTR = "definition"  # what a resumed search must share with its first run (.definition)
LATENCY_DEVICE_ATTR = "latency_device"  # the device its latencies come from (.device)
