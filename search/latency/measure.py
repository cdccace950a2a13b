"""Latency of a network, measured like a measurement: explicit target, warm-up, adaptive repeats, spread, fingerprint.

Eager PyTorch at batch 1 on a CPU mostly times Python overhead per op, so the target
names its runtime (ONNX Runtime by default), threads, batch size and dtype. After a
warm-up, calls are timed in chunks until the median's distribution-free 95% confidence
interval is within ``rel_precision`` of it, or ``time_cap_s`` or ``max_repeats`` is reached
(:mod:`.stats`). Every result carries the device fingerprint it was taken on.

Drift control (``reference=True``) interleaves chunks of the candidate with chunks of a
fixed small reference network (the ``blocknet_separable`` preset at the same input), so
``relative_to_reference`` stays comparable when the machine's load changes.
``isolate=True`` measures in a spawned worker process that never trains, so allocator,
thread-pool and cache state of a training process do not leak into the numbers.

With ``agent`` set, the network is exported here and measured by the latency agent on the
target device (:mod:`.agent`, :mod:`.agent_client`), with the same protocol; the result's
fingerprint is that device's.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import logging
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from torch import nn

from blocknas.search.threads import pinned_threads, seeded_rng

from .agent_client import AgentClient, AgentError
from .fingerprint import device_fingerprint
from .host import fingerprint_id
from .ort_timing import run_protocol
from .runtimes import Runner, check_runtime, create_runner, example_input, export_onnx
from .stats import TimingSummary
from .target import LatencyTarget

__all__ = [
    "LATENCY_P90_METRIC",
    "REFERENCE_MODEL",
    "LatencyResult",
    "agent_fingerprint",
    "check_agent",
    "measure_latency",
    "measure_runner",
    "reference_model",
]

log = logging.getLogger(__name__)

REFERENCE_MODEL = "blocknet_separable"
LATENCY_P90_METRIC = "latency_p90_ms"  # MLflow metric of the measured 90th percentile (the report reads it)


@dataclass(frozen=True, kw_only=True)
class LatencyResult(TimingSummary):
    """One latency measurement: the robust statistics of its per-call times, the target and the device.

    The statistics are :class:`~.stats.TimingSummary`'s (``p50_ms``, the number to optimise,
    is the median of the quiet chunks of the run).

    Attributes:
        target: What was measured.
        fingerprint: Device, software and runtime settings.
        fingerprint_id: Short stable hash of ``fingerprint``.
        relative_to_reference: Candidate p50 / reference p50 (drift control only).
        reference_p50_ms: The reference network's median (drift control only).
        stop_reason: ``precision``, ``time_cap`` or ``max_repeats``.
    """

    target: LatencyTarget
    fingerprint: dict[str, str]
    fingerprint_id: str
    relative_to_reference: float | None = None
    reference_p50_ms: float | None = None
    stop_reason: str = ""

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics: ``latency_p50_ms``, ``latency_p90_ms``, ``latency_mean_ms``, ``latency_iqr_ms``,
        ``latency_cv``, ``latency_samples``, ``latency_p50_all_ms``, ``latency_quiet_share``,
        ``latency_ci_rel`` (when finite) and the reference ratio."""
        metrics = {
            "latency_p50_ms": self.p50_ms,
            LATENCY_P90_METRIC: self.p90_ms,
            "latency_mean_ms": self.mean_ms,
            "latency_iqr_ms": self.iqr_ms,
            "latency_cv": self.cv,
            "latency_samples": float(self.n_samples),
            "latency_p50_all_ms": self.p50_all_ms,
            "latency_quiet_share": self.quiet_share,
        }
        if math.isfinite(self.ci_rel):
            metrics["latency_ci_rel"] = self.ci_rel
        if self.relative_to_reference is not None and self.reference_p50_ms is not None:
            metrics["latency_relative_to_reference"] = self.relative_to_reference
            metrics["latency_reference_p50_ms"] = self.reference_p50_ms
        return metrics


def reference_model(in_chans: int = 3) -> nn.Module:
    """The fixed drift-control network: the ``blocknet_separable`` preset, seeded weights."""
    import timm

    import blocknas.blocks  # noqa: F401 - registers the blocknet models with timm

    with seeded_rng(0):
        return timm.create_model(REFERENCE_MODEL, in_chans=in_chans)


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], target: LatencyTarget) -> LatencyResult:
    """Measure the per-call latency of ``model`` on inputs of ``(target.batch_size, *input_shape)``.

    The model is copied (or exported) in eval mode; the caller's module is not modified.
    Torch's intra-op thread count is pinned to ``target.threads`` and restored afterwards.
    ``target.mode`` is not consulted: this always measures.

    Args:
        model: The network.
        input_shape: ``(channels, height, width)`` of one sample.
        target: Runtime, threads, batch, dtype and the repeat protocol.

    Returns:
        Median, spread, sample count, achieved precision and the device fingerprint.

    Raises:
        ValueError: Unknown runtime or dtype.
        RuntimeError: ``cuda`` without a GPU, or ``compile`` where ``torch.compile`` fails.
        AgentError: ``target.agent`` could not measure it (unreachable, too slow, refused).
    """
    check_runtime(target)
    if target.agent is not None:
        return _measure_on_agent(model, input_shape, target)
    if target.isolate:
        return _measure_isolated(model, input_shape, target)
    return _measure_here(model, input_shape, target)


def _measure_here(model: nn.Module | bytes, input_shape: tuple[int, ...], target: LatencyTarget) -> LatencyResult:
    with pinned_threads(target.threads, target.inter_op_threads):
        runner = create_runner(model, input_shape, target)
        reference = create_runner(reference_model(input_shape[0]), input_shape, target) if target.reference else None
        return measure_runner(runner, target, reference)


def measure_runner(
    runner: Runner,
    target: LatencyTarget,
    reference: Runner | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> LatencyResult:
    """Warm up, then time ``runner`` (interleaved with ``reference`` if given) until the stop rule holds.

    The protocol is :func:`.ort_timing.run_protocol`, the one the latency agent runs too.
    """
    run = run_protocol(runner, target.stop_rule(), target.warmup, reference, clock=clock)
    stats, reason, ref_p50 = run.summary, run.stop_reason, run.reference_p50_ms
    fingerprint = {**device_fingerprint(target), **runner.settings}
    if reason != "precision":
        log.debug(
            "latency stopped by %s at n=%d with ci_rel=%.3f (wanted %.3f)",
            reason,
            stats.n_samples,
            stats.ci_rel,
            target.rel_precision,
        )
    return LatencyResult(
        **dataclasses.asdict(stats),
        target=target,
        fingerprint=fingerprint,
        fingerprint_id=fingerprint_id(fingerprint),
        relative_to_reference=stats.p50_ms / ref_p50 if ref_p50 else None,
        reference_p50_ms=ref_p50,
        stop_reason=reason,
    )


# -- on a latency agent -----------------------------------------------------------------


def _measure_on_agent(model: nn.Module, input_shape: tuple[int, ...], target: LatencyTarget) -> LatencyResult:
    """Export ``model`` here, measure it on ``target.agent``; the fingerprint is the agent's device."""
    x = example_input(input_shape, target.batch_size, target.dtype)
    onnx_model, exporter = export_onnx(model, x)
    answer = AgentClient.for_target(target).measure(onnx_model, target)
    if answer.input_shape != tuple(x.shape):
        raise AgentError(f"latency agent {target.agent} timed input {answer.input_shape}, not {tuple(x.shape)}")
    fingerprint = {**device_fingerprint(target, host=answer.fingerprint), **answer.settings, "onnx_exporter": exporter}
    try:
        values: dict[str, Any] = {k: math.inf if v is None else v for k, v in answer.summary.items()}
        stats = TimingSummary(**values)
    except TypeError as exc:
        raise AgentError(f"latency agent {target.agent}: unexpected statistics ({exc})") from None
    return LatencyResult(
        **dataclasses.asdict(stats),
        target=target,
        fingerprint=fingerprint,
        fingerprint_id=fingerprint_id(fingerprint),
        stop_reason=answer.stop_reason,
    )


def agent_fingerprint(target: LatencyTarget) -> dict[str, str]:
    """The device fingerprint latencies measured on ``target.agent`` carry (asks its ``/health``)."""
    return device_fingerprint(target, host=AgentClient.for_target(target).health()["fingerprint"])


def check_agent(target: LatencyTarget, input_shape: tuple[int, int, int] = (3, 32, 32)) -> LatencyResult:
    """Check ``target.agent`` before a study starts: its ``/health``, then a measurement of the reference network.

    Returns:
        The reference network's measurement (its fingerprint is the device's).

    Raises:
        AgentError: Unreachable, slower than ``agent_timeout_s``, a refused token or a bad answer.
    """
    agent_fingerprint(target)
    return measure_latency(reference_model(input_shape[0]), input_shape, target)


# -- isolation -------------------------------------------------------------------------

_worker: ProcessPoolExecutor | None = None


def _isolated_worker() -> ProcessPoolExecutor:
    """One spawned measuring process, started on first use and kept for later measurements."""
    global _worker
    if _worker is None:
        _worker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        atexit.register(_worker.shutdown, wait=False, cancel_futures=True)
    return _worker


def _measure_payload(
    payload: nn.Module | bytes, settings: dict[str, str], input_shape: tuple[int, ...], target: LatencyTarget
) -> LatencyResult:
    result = _measure_here(payload, input_shape, target)
    if not settings:
        return result
    fingerprint = {**result.fingerprint, **settings}
    return dataclasses.replace(result, fingerprint=fingerprint, fingerprint_id=fingerprint_id(fingerprint))


def _measure_isolated(model: nn.Module, input_shape: tuple[int, ...], target: LatencyTarget) -> LatencyResult:
    """Send the exported ONNX model (or, for torch runtimes, a CPU copy of the module) to the worker."""
    global _worker
    settings: dict[str, str] = {}
    payload: nn.Module | bytes
    if target.runtime == "onnxruntime":
        payload, exporter = export_onnx(model, example_input(input_shape, target.batch_size, target.dtype))
        settings["onnx_exporter"] = exporter
    else:
        payload = copy.deepcopy(model).cpu()  # CUDA tensors do not travel to a spawned process by pickle
    try:
        future = _isolated_worker().submit(
            _measure_payload, payload, settings, tuple(input_shape), target.replace(isolate=False)
        )
        return dataclasses.replace(future.result(), target=target)
    except BrokenProcessPool as exc:
        _worker = None
        raise RuntimeError("the isolated latency worker process died; see its output above") from exc
