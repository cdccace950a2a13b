"""``LatencyTarget``: where and how a latency is measured (the ``latency:`` key of every config)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from blocknas.blocks import ConfigError, check_range
from blocknas.search.threads import MAX_THREADS

from .stats import StopRule

__all__ = ["MAX_LATENCY_BATCH", "MAX_REPEATS", "MAX_TIMING_S", "RUNTIMES", "LatencyTarget", "Runtime"]

MAX_LATENCY_BATCH = 4096
"""Largest batch a latency is measured at."""
MAX_REPEATS = 1_000_000
"""Most warm-up or timed calls."""
MAX_TIMING_S = 3600.0
"""Longest ``time_cap_s`` / ``min_time_s``: an hour on one network."""

Runtime = Literal["onnxruntime", "torch", "torchscript", "compile", "cuda"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)


@dataclass(frozen=True)
class LatencyTarget:
    """Where and how a latency is measured; part of every study config (``latency:`` key).

    Attributes:
        runtime: ``onnxruntime`` (default: what a CPU deployment runs), ``torch`` (eager),
            ``torchscript`` (trace + freeze), ``compile`` (``torch.compile``), ``cuda``.
        batch_size: Samples per call.
        threads: Intra-op threads, pinned during the measurement and restored after.
        inter_op_threads: Inter-op threads (ONNX Runtime session option; torch's is
            process-wide and can only be set before first use).
        dtype: Weights and input dtype; ``bfloat16`` is not available in ``onnxruntime``.
        warmup: Untimed calls first.
        min_repeats: Timed calls before the precision rule may stop the run.
        max_repeats: Hard limit on timed calls.
        rel_precision: Stop when the 95% CI half-width of the median is at most this
            fraction of the median (and ``min_time_s`` has passed). Also the tolerance
            that decides which chunks count as quiet (:mod:`.latency_stats`).
        time_cap_s: ... or when this much time has been spent timing.
        min_time_s: Time at least this long (capped by ``time_cap_s``), so the chunks span
            several load phases of a shared machine and the quiet ones can be told apart.
        isolate: Measure in a separate spawned worker process.
        reference: Interleave with a fixed reference network; report the ratio too.
        mode: What the search objective optimises: ``measured`` p50, or ``predicted``
            from the per-block lookup table (the measurement is still logged).
    """

    runtime: Runtime = "onnxruntime"
    batch_size: int = 1
    threads: int = 1
    inter_op_threads: int = 1
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    warmup: int = 10
    min_repeats: int = 30
    max_repeats: int = 2000
    rel_precision: float = 0.02
    time_cap_s: float = 1.0
    min_time_s: float = 0.25
    isolate: bool = False
    reference: bool = False
    mode: Literal["measured", "predicted"] = "measured"

    def __post_init__(self) -> None:
        check_range(self.batch_size, "batch_size", 1, MAX_LATENCY_BATCH)
        for key in ("threads", "inter_op_threads"):
            check_range(getattr(self, key), key, 1, MAX_THREADS)
        check_range(self.warmup, "warmup", 0, MAX_REPEATS)
        check_range(self.min_repeats, "min_repeats", 1, MAX_REPEATS)
        if self.max_repeats < self.min_repeats:
            raise ConfigError(f"{self.max_repeats} must be >= min_repeats ({self.min_repeats})", path="max_repeats")
        check_range(self.max_repeats, "max_repeats", 1, MAX_REPEATS)
        if not 0 < self.rel_precision < 1:
            raise ConfigError(f"{self.rel_precision} must be in (0, 1), e.g. 0.02 for 2%", path="rel_precision")
        check_range(self.time_cap_s, "time_cap_s", 0, MAX_TIMING_S, above=True)
        check_range(self.min_time_s, "min_time_s", 0, MAX_TIMING_S)
        if self.runtime == "onnxruntime" and self.dtype == "bfloat16":
            raise ConfigError(
                "onnxruntime on the CPU has no bfloat16 convolutions; use float32/float16 or runtime 'torch'",
                path="dtype",
            )

    def replace(self, **changes: Any) -> LatencyTarget:
        """A validated copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def stop_rule(self) -> StopRule:
        return StopRule(self.min_repeats, self.max_repeats, self.rel_precision, self.time_cap_s, self.min_time_s)
