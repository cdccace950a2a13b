"""The measuring protocol and the ONNX Runtime session it times, with nothing but ONNX Runtime and NumPy.

:func:`run_protocol` is the one protocol every latency goes through: warm-up, chunks of
timed calls until the stop rule holds (:func:`.stats.sample_adaptively`), the quiet-chunk
median and its confidence interval. A local measurement (:mod:`.measure`) runs it on any
runtime's runner; the latency agent (:mod:`.agent`) runs it on an :class:`OrtSession` on
the target device. This module and the ones it imports (:mod:`.stats`) import neither torch
nor SciPy, so the agent runs them as they are on a device that has neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .stats import StopRule, TimingSummary, sample_adaptively, summarize_chunks

__all__ = ["ORT_SESSION_SETTINGS", "OrtSession", "Timeable", "TimedRun", "run_protocol", "time_calls"]

ORT_SESSION_SETTINGS = {
    "ort_provider": "CPUExecutionProvider",
    "ort_graph_optimization": "ORT_ENABLE_ALL",
    "ort_execution_mode": "ORT_SEQUENTIAL",
}
"""The session settings every ONNX Runtime latency is measured with (part of the device fingerprint)."""

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def time_calls(call: Callable[[], Any], n: int) -> list[float]:
    """``n`` back-to-back calls of ``call``; each call's latency in milliseconds."""
    clock = time.perf_counter_ns
    out = []
    for _ in range(n):
        start = clock()
        call()
        out.append((clock() - start) / 1e6)
    return out


class Timeable(Protocol):
    """Anything :func:`run_protocol` can time: ``n`` calls, their latencies in ms."""

    def time(self, n: int) -> list[float]: ...


class OrtSession:
    """An ONNX Runtime session on the CPU execution provider with a fixed input.

    Args:
        model: Serialized ONNX model, or the path of one.
        feed: The input; ``None`` makes a seeded standard-normal one of the model's own
            input shape and type (the agent's case: it is sent a model, not an input).
        threads: Intra-op threads of the session.
        inter_op_threads: Inter-op threads of the session.
        settings: Settings recorded with its latencies (default :data:`ORT_SESSION_SETTINGS`).

    Raises:
        ValueError: The model has not exactly one input, of static shape and float type.
    """

    runtime = "onnxruntime"

    def __init__(
        self,
        model: bytes | str,
        feed: np.ndarray | None = None,
        *,
        threads: int,
        inter_op_threads: int,
        settings: Mapping[str, str] = ORT_SESSION_SETTINGS,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"the model has {len(inputs)} inputs; a latency model has exactly one")
        self.feed = {inputs[0].name: _seeded_input(inputs[0]) if feed is None else feed}
        self.settings = dict(settings)

    @property
    def input(self) -> np.ndarray:
        """The array every call is run on."""
        return next(iter(self.feed.values()))

    def _call(self) -> list[Any]:
        return self.session.run(None, self.feed)

    def infer(self) -> np.ndarray:
        """One inference; the first output as a float32 array."""
        return np.asarray(self._call()[0], dtype=np.float32)

    def time(self, n: int) -> list[float]:
        return time_calls(self._call, n)


def _seeded_input(spec: Any) -> np.ndarray:
    """A seeded standard-normal array of an ONNX input's static shape and float type."""
    shape = list(spec.shape)
    if not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"the model's input {spec.name!r} has shape {shape}; a latency model needs a static shape")
    if spec.type not in _ORT_DTYPES:
        raise ValueError(f"the model's input {spec.name!r} is {spec.type}; use {' or '.join(_ORT_DTYPES)}")
    return np.random.default_rng(0).standard_normal(shape).astype(_ORT_DTYPES[spec.type])


@dataclass(frozen=True)
class TimedRun:
    """What one run of the protocol measured.

    Attributes:
        summary: Statistics of the timed calls (the quiet-chunk median is ``summary.p50_ms``).
        stop_reason: ``precision``, ``time_cap`` or ``max_repeats``.
        reference_p50_ms: Quiet-chunk median of the interleaved reference, if one was timed.
    """

    summary: TimingSummary
    stop_reason: str
    reference_p50_ms: float | None = None


def run_protocol(
    runner: Timeable,
    rule: StopRule,
    warmup: int,
    reference: Timeable | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> TimedRun:
    """Warm up, then time ``runner`` (a chunk of ``reference`` after each of its chunks, if given) until ``rule`` stops.

    Args:
        runner: What is measured.
        rule: When to stop (:class:`.stats.StopRule`).
        warmup: Untimed calls of each runner first.
        reference: The drift-control network, or ``None``.
        clock: Monotonic seconds.
    """
    runner.time(warmup)
    if reference is not None:
        reference.time(warmup)
    reference_chunks: list[list[float]] = []

    def time_chunk(n: int) -> list[float]:
        out = runner.time(n)
        if reference is not None:
            reference_chunks.append(reference.time(n))
        return out

    chunks, reason = sample_adaptively(time_chunk, rule, clock)
    ref_p50 = summarize_chunks(reference_chunks, rule.rel_precision).p50_ms if reference_chunks else None
    return TimedRun(summarize_chunks(chunks, rule.rel_precision), reason, ref_p50)
