"""Latency: target, measurement, statistics, runtimes, device fingerprint and the per-block lookup table."""

from __future__ import annotations

from .fingerprint import NOT_HASHED, device_fingerprint, fingerprint_id
from .measure import (
    REFERENCE_MODEL,
    LatencyResult,
    measure_latency,
    measure_runner,
    reference_model,
)
from .runtimes import (
    OrtRunner,
    Runner,
    TorchRunner,
    check_runtime,
    create_runner,
    example_input,
    export_onnx,
    runtime_settings,
)
from .stats import (
    StopRule,
    TimingSummary,
    median_ci,
    median_ci_ranks,
    next_chunk_size,
    quiet_samples,
    sample_adaptively,
    stop_reason,
    summarize,
    summarize_chunks,
)
from .table import (
    ENTRY_MIN_TIME_S,
    ENTRY_TIME_CAP_S,
    MIN_CALIBRATION_POINTS,
    TABLE_VERSION,
    LatencyPredictor,
    TablePart,
    overhead_part,
    table_parts,
)
from .target import RUNTIMES, LatencyTarget, Runtime

__all__ = [
    "ENTRY_MIN_TIME_S",
    "ENTRY_TIME_CAP_S",
    "MIN_CALIBRATION_POINTS",
    "NOT_HASHED",
    "REFERENCE_MODEL",
    "RUNTIMES",
    "TABLE_VERSION",
    "LatencyPredictor",
    "LatencyResult",
    "LatencyTarget",
    "OrtRunner",
    "Runner",
    "Runtime",
    "StopRule",
    "TablePart",
    "TimingSummary",
    "TorchRunner",
    "check_runtime",
    "create_runner",
    "device_fingerprint",
    "example_input",
    "export_onnx",
    "fingerprint_id",
    "measure_latency",
    "measure_runner",
    "median_ci",
    "median_ci_ranks",
    "next_chunk_size",
    "overhead_part",
    "quiet_samples",
    "reference_model",
    "runtime_settings",
    "sample_adaptively",
    "stop_reason",
    "summarize",
    "summarize_chunks",
    "table_parts",
]
