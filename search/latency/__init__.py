"""Latency: target, measurement, statistics, runtimes, device fingerprint and the per-block lookup table.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .agent import write_agent_zipapp
from .agent_client import AgentClient, AgentError, AgentLost
from .calibrate import NetworkShape, calibrate_table, sample_architectures
from .fingerprint import device_fingerprint
from .host import fingerprint_id
from .measure import LatencyResult, check_agent, measure_latency, reference_model
from .runtimes import create_runner, example_input, export_onnx
from .stats import (
    StopRule,
    median_ci,
    median_ci_ranks,
    next_chunk_size,
    quiet_samples,
    sample_adaptively,
    stop_reason,
    summarize,
    summarize_chunks,
)
from .table import LatencyPredictor, table_parts
from .target import LatencyTarget

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentLost",
    "LatencyPredictor",
    "LatencyResult",
    "LatencyTarget",
    "NetworkShape",
    "StopRule",
    "calibrate_table",
    "check_agent",
    "create_runner",
    "device_fingerprint",
    "example_input",
    "export_onnx",
    "fingerprint_id",
    "measure_latency",
    "median_ci",
    "median_ci_ranks",
    "next_chunk_size",
    "quiet_samples",
    "reference_model",
    "sample_adaptively",
    "sample_architectures",
    "stop_reason",
    "summarize",
    "summarize_chunks",
    "table_parts",
    "write_agent_zipapp",
]
