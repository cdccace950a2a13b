"""Inference runtimes a latency is measured in: one :class:`Runner` per runtime, thread pinning.

A runner owns a prepared, frozen copy of a model and a fixed input; :meth:`Runner.time`
returns per-call latencies and :meth:`Runner.infer` the output, so tests can check that
every runtime computes the same function it times.

* ``onnxruntime``: the model is exported to ONNX in memory with the TorchScript-based
  exporter (``dynamo=False``, still present in torch 2.x; 20-80× faster than the dynamo
  exporter on these small networks, which matters when every trial and every table entry
  exports). If that exporter fails or is gone, the dynamo exporter is used and the
  result's fingerprint says so. Sessions run ``ORT_SEQUENTIAL``, all graph optimizations,
  ``CPUExecutionProvider``, with the target's intra/inter-op threads.
* ``torch``: eager PyTorch under ``torch.inference_mode``.
* ``torchscript``: ``torch.jit.trace`` then ``torch.jit.freeze`` (deprecated by PyTorch
  but working; its warnings are silenced here).
* ``compile``: ``torch.compile`` (inductor); compiled while the runner is created, after
  ``torch.compiler.reset()`` so the recompile limit never silently falls back to eager.
  Compiling takes 10-30 s per network on a CPU. When it fails (e.g. no C++ compiler)
  the error says so; there is no silent fallback to another runtime.
* ``cuda``: eager PyTorch on the current GPU, timed with CUDA events.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from .ort_timing import ORT_SESSION_SETTINGS, OrtSession, time_calls
from .target import RUNTIMES, LatencyTarget

__all__ = [
    "OrtRunner",
    "Runner",
    "TorchRunner",
    "check_runtime",
    "create_runner",
    "example_input",
    "export_onnx",
    "runtime_settings",
]

log = logging.getLogger(__name__)

ONNX_OPSET = 18  # the dynamo exporter implements nothing lower; the TorchScript-based one handles 18 too
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_LEGACY_EXPORTER = "dynamo" in inspect.signature(torch.onnx.export).parameters


def runtime_settings(runtime: str) -> dict[str, str]:
    """Fixed settings of a runtime that change its latencies (part of the device fingerprint)."""
    if runtime == "onnxruntime":
        return {
            "onnx_exporter": "torchscript" if _LEGACY_EXPORTER else "dynamo",
            "onnx_opset": str(ONNX_OPSET),
            **ORT_SESSION_SETTINGS,
        }
    if runtime == "compile":
        return {"torch_compile": "inductor,dynamic=False"}
    if runtime == "torchscript":
        return {"torchscript": "trace+freeze"}
    return {}


def example_input(input_shape: tuple[int, ...], batch_size: int, dtype: str = "float32") -> torch.Tensor:
    """The fixed input every runtime is timed on: ``(batch_size, *input_shape)``, seeded, CPU."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size, *input_shape), generator=generator).to(_DTYPES[dtype])


def _frozen_copy(model: nn.Module, dtype: str) -> nn.Module:
    """An eval-mode, gradient-free copy on the CPU; the caller's model is never touched."""
    clone = copy.deepcopy(model).eval().to("cpu", _DTYPES[dtype])
    clone.requires_grad_(False)
    return clone


def export_onnx(model: nn.Module, x: torch.Tensor, *, dynamic_batch: bool = False) -> tuple[bytes, str]:
    """Serialized ONNX of ``model`` (eval mode, not modified) at input ``x``, and the exporter used.

    Args:
        dynamic_batch: Name the first axis of input and output ``batch``, so the file runs at
            any batch size (for a file to deploy; a file to time keeps the fixed shape).

    Returns:
        The model bytes and ``"torchscript"`` or ``"dynamo"``.
    """
    model = _frozen_copy(model, _dtype_name(x.dtype))
    with torch.inference_mode():
        model(x)  # a forward that fails is the network's error, not an exporter's: raise it as it is
    kwargs: dict[str, Any] = dict(input_names=["input"], output_names=["output"], opset_version=ONNX_OPSET)
    with tempfile.TemporaryDirectory(prefix="blocknas-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        if _LEGACY_EXPORTER:
            try:
                with warnings.catch_warnings():  # the legacy exporter announces its deprecation on every call
                    warnings.simplefilter("ignore")
                    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                    torch.onnx.export(
                        model, (x,), path, dynamo=False, do_constant_folding=True, dynamic_axes=axes, **kwargs
                    )
                return path.read_bytes(), "torchscript"
            except Exception as exc:  # any failure of the legacy path falls back to dynamo
                log.warning(
                    "TorchScript-based ONNX export failed (%s: %s); using the dynamo exporter", type(exc).__name__, exc
                )
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # dynamo prints its progress
            warnings.simplefilter("ignore")
            if dynamic_batch:  # torch.export fixes an axis of size 1: trace at batch 2
                x, kwargs["dynamic_shapes"] = x.expand(max(2, len(x)), *x.shape[1:]), ({0: torch.export.Dim("batch")},)
            torch.onnx.export(model, (x,), path, dynamo=True, external_data=False, **kwargs)
        return path.read_bytes(), "dynamo"


def _dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in _DTYPES.items()}[dtype]


class Runner(Protocol):
    """A prepared model on a fixed input in one runtime."""

    runtime: str
    settings: dict[str, str]  # runtime settings actually used (e.g. the ONNX exporter)

    def infer(self) -> np.ndarray:
        """One inference; the output as a float32 NumPy array."""
        ...

    def time(self, n: int) -> list[float]:
        """``n`` back-to-back calls; each call's latency in milliseconds."""
        ...


class OrtRunner(OrtSession):
    """ONNX Runtime session on the CPU execution provider, on a given input, recording its exporter."""

    def __init__(self, onnx_model: bytes, x: np.ndarray, *, threads: int, inter_op_threads: int, exporter: str) -> None:
        settings = {**runtime_settings("onnxruntime"), "onnx_exporter": exporter}
        super().__init__(onnx_model, x, threads=threads, inter_op_threads=inter_op_threads, settings=settings)


class TorchRunner:
    """A PyTorch callable (eager, TorchScript or compiled) on the CPU."""

    def __init__(
        self,
        runtime: str,
        module: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        grad_mode: Callable[[], Any],
    ) -> None:
        self.runtime, self.module, self.x, self.grad_mode = runtime, module, x, grad_mode
        self.settings = runtime_settings(runtime)

    def infer(self) -> np.ndarray:
        with self.grad_mode():
            return self.module(self.x).float().cpu().numpy()

    def time(self, n: int) -> list[float]:
        with self.grad_mode():
            return time_calls(lambda: self.module(self.x), n)


class CudaRunner(TorchRunner):
    """Eager PyTorch on the GPU; each call timed by a pair of CUDA events."""

    def time(self, n: int) -> list[float]:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        with self.grad_mode():
            for start, end in events:
                start.record()
                self.module(self.x)
                end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in events]


def check_runtime(target: LatencyTarget) -> None:
    """Raise a clear error for a runtime or dtype this process cannot measure."""
    if target.runtime not in RUNTIMES:
        raise ValueError(f"unknown latency runtime {target.runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if target.dtype not in _DTYPES:
        raise ValueError(f"unknown latency dtype {target.dtype!r}; choose one of: {', '.join(_DTYPES)}")
    if target.runtime == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("cuda latency target requested but torch.cuda.is_available() is False")


def create_runner(model: nn.Module | bytes, input_shape: tuple[int, ...], target: LatencyTarget) -> Runner:
    """Prepare ``model`` for timing in ``target.runtime`` at ``(target.batch_size, *input_shape)``.

    Args:
        model: The network (copied, put in eval mode; never modified), or for ``onnxruntime``
            an already exported ONNX model.
        input_shape: ``(channels, height, width)`` of one sample.
        target: Runtime, batch size, dtype and threads.

    Returns:
        A runner whose :meth:`Runner.time` is what a latency measurement repeats.
    """
    check_runtime(target)
    x = example_input(input_shape, target.batch_size, target.dtype)
    if target.runtime == "onnxruntime":
        onnx_model, exporter = (model, "given") if isinstance(model, bytes) else export_onnx(model, x)
        feed = x.numpy()
        return OrtRunner(
            onnx_model, feed, threads=target.threads, inter_op_threads=target.inter_op_threads, exporter=exporter
        )
    if isinstance(model, bytes):
        raise TypeError(f"runtime {target.runtime!r} needs an nn.Module; ONNX bytes run only in 'onnxruntime'")
    module = _frozen_copy(model, target.dtype)
    if target.runtime == "torch":
        return TorchRunner("torch", module, x, torch.inference_mode)
    if target.runtime == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():  # torch.jit is deprecated but still the way to freeze
            warnings.simplefilter("ignore")
            scripted = torch.jit.freeze(torch.jit.trace(module, x))
        return TorchRunner("torchscript", scripted, x, torch.inference_mode)
    if target.runtime == "compile":
        return _compiled_runner(module, x)
    module = module.cuda()
    return CudaRunner("cuda", module, x.cuda(), torch.inference_mode)


def _compiled_runner(module: nn.Module, x: torch.Tensor) -> TorchRunner:
    torch.compiler.reset()
    compiled = torch.compile(module, dynamic=False)
    try:
        with torch.no_grad():
            compiled(x)  # compile now, not during warm-up
    except Exception as exc:
        raise RuntimeError(
            f"torch.compile failed for the 'compile' latency target ({type(exc).__name__}: {exc}); "
            "it needs a working C++ compiler for inductor on the CPU. Use runtime 'torchscript' or 'onnxruntime'."
        ) from exc
    return TorchRunner("compile", compiled, x, torch.no_grad)
