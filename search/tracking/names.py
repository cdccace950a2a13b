"""The names blocknas writes to MLflow: run tags and metric names, each spelled here once.

Every module that writes or reads one imports it from here (``tests/test_names.py`` fails
on a bare spelling anywhere else). Standard library only, so anything may import it.
The Optuna attribute keys live beside their owners: :mod:`blocknas.search.tracking.attrs`
and :mod:`blocknas.search.study.attrs`; a latency measurement's own metrics (``latency_p90_ms``, ...)
in :mod:`blocknas.search.latency.measure`, which does not import MLflow.
"""

from __future__ import annotations

__all__ = [
    "ACCURACY_METRIC",
    "ARCH_HASH_TAG",
    "BASELINE_TAG",
    "BLOCKS_TAG",
    "BLOCK_TAG_PREFIX",
    "DUPLICATE_OF_TAG",
    "ERROR_TAG",
    "FINGERPRINT_ID_TAG",
    "FINGERPRINT_TAG_PREFIX",
    "KIND_TAG",
    "LATENCY_METRIC",
    "LATENCY_PREDICTED_METRIC",
    "MACS_METRIC",
    "OBJECTIVE_METRICS",
    "OUT_DIR_TAG",
    "OVER_BUDGET_TAG",
    "PARAMS_METRIC",
    "PRUNED_AT_EPOCH_TAG",
    "PRUNED_BY_TAG",
    "PRUNED_RUNG_TAG",
    "ROLE_TAG",
    "RUN_KEY_TAG",
    "RUN_STATES",
    "SCREEN_KEPT_SCORE_TAG",
    "SCREEN_POOL_TAG",
    "SCREEN_PROXY_TAG",
    "SCREEN_SCORES_TAG",
    "STATE_COMPLETE",
    "STATE_DIVERGED",
    "STATE_FAILED",
    "STATE_KILLED",
    "STATE_OVER_BUDGET",
    "STATE_PRUNED",
    "STATE_TAG",
    "STOPPED_TAG",
    "STUDY_TAG",
    "TRAIN_SECONDS_METRIC",
    "TRIAL_NUMBER_TAG",
    "VALIDATE_BUDGET_TAG",
    "tag_equals",
]

# -- tags of every run ----------------------------------------------------------------------
ROLE_TAG = "blocknas.role"  # "study" on a search's parent run, "train" on a full training's run
STUDY_TAG = "blocknas.study"  # the study's name, on its parent run and on each trial's child run
KIND_TAG = "blocknas.kind"  # a run that is no trial's: an ablation's parent, a validation child
TRIAL_NUMBER_TAG = "optuna.trial_number"  # a trial's child run: the trial it records
RUN_KEY_TAG = "blocknas.run_key"  # a trial's child run: the key its creation was retried under (one run per key)

# -- a trial's child run --------------------------------------------------------------------
STATE_TAG = "blocknas.state"  # how the trial ended: one of RUN_STATES
ERROR_TAG = "blocknas.error"  # why it failed
ARCH_HASH_TAG = "blocknas.arch_hash"  # the architecture's short hash (also on a full training's run)
BLOCKS_TAG = "blocknas.blocks"  # the block of each stage, comma-separated
BLOCK_TAG_PREFIX = "blocknas.block."  # + ``s<stage index>``: that stage's block
BASELINE_TAG = "blocknas.baseline"  # the baseline's name, for an enqueued baseline
DUPLICATE_OF_TAG = "blocknas.duplicate_of"  # the trial whose recorded values this duplicate took
OVER_BUDGET_TAG = "blocknas.over_budget"  # the budget a rejected (never trained) candidate exceeded
SCREEN_PROXY_TAG = "blocknas.screen_proxy"  # the proxy that ranked the trial's screening pool
SCREEN_POOL_TAG = "blocknas.screen_pool"  # how many candidates were screened for the trial
SCREEN_KEPT_SCORE_TAG = "blocknas.screen_kept_score"  # the trained candidate's proxy score
SCREEN_SCORES_TAG = "blocknas.screen_scores"  # every candidate's score, JSON, in draw order (null: not scored)
PRUNED_BY_TAG = "blocknas.pruned_by"  # the pruner that stopped the trial
PRUNED_AT_EPOCH_TAG = "blocknas.pruned_at_epoch"  # the epoch it was stopped after
PRUNED_RUNG_TAG = "blocknas.pruned_rung"  # the rung that stopped it
FINGERPRINT_TAG_PREFIX = "latency.fp."  # + a fingerprint key: the device its latency was measured on
FINGERPRINT_ID_TAG = "latency.fingerprint_id"  # that fingerprint's short id

# -- the values of STATE_TAG ----------------------------------------------------------------
STATE_COMPLETE = "complete"  # trained and scored, or took its duplicate's recorded values
STATE_PRUNED = "pruned"  # stopped early by the pruner (or as its duplicate's original was)
STATE_OVER_BUDGET = "over_budget"  # rejected before training: over a params, MACs or latency budget
STATE_DIVERGED = "diverged"  # its training loss went non-finite
STATE_FAILED = "failed"  # an error; ERROR_TAG says which
STATE_KILLED = "killed"  # interrupted, cut short by a storage fault, or its worker gone (its trial FAIL)
RUN_STATES = (STATE_COMPLETE, STATE_PRUNED, STATE_OVER_BUDGET, STATE_DIVERGED, STATE_FAILED, STATE_KILLED)

# -- other runs -----------------------------------------------------------------------------
STOPPED_TAG = "blocknas.stopped"  # a search's parent run: why the study stopped before its trial count
VALIDATE_BUDGET_TAG = "blocknas.validate.budget"  # digest of a validation's budgets: one MLflow run each
OUT_DIR_TAG = "blocknas.out_dir"  # a full training's checkpoint folder

# -- metrics --------------------------------------------------------------------------------
ACCURACY_METRIC = "accuracy"  # a trial's score (the study's first objective)
LATENCY_METRIC = "latency_ms"  # a trial's latency objective: measured p50, or the table's prediction
LATENCY_PREDICTED_METRIC = "latency_predicted_ms"  # the lookup table's prediction
PARAMS_METRIC = "params"  # parameter count
MACS_METRIC = "macs"  # multiply-accumulates of one forward pass
TRAIN_SECONDS_METRIC = "train_seconds"  # wall time of the (brief or full) training
OBJECTIVE_METRICS = (ACCURACY_METRIC, LATENCY_METRIC)
"""The objectives in study order: a multi-objective study's metric names; an accuracy-only study has the first."""


def tag_equals(tag: str, value: str) -> str:
    """An MLflow ``search_runs`` filter clause: run tag ``tag`` equals ``value``."""
    return f"tags.`{tag}` = '{value}'"
