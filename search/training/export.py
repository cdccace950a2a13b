"""Export a trained network to ONNX and TorchScript, verify each file, and time each file.

Every exported file is loaded back and run on the same random inputs as the PyTorch
model, at batch sizes 1 and 8 (:data:`CHECK_BATCH_SIZES`); an output further than ``atol``
from PyTorch's is an :class:`ExportError`. The ONNX input is ``(batch, C, H, W)`` with a
dynamic ``batch`` axis, and the file's ``metadata_props`` hold the input's
:class:`~blocknas.search.data.Preprocessing` (size, the training data's mean and std, class
names) when the architecture records it; ``arch.yaml`` is written beside the files. The
latency of each *file* (not of the module it came from) is measured with the latency
engine's repeat protocol (:func:`blocknas.search.latency.measure.measure_runner`) at the latency
target's batch size and written to ``latency.json``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from blocknas.blocks import ArchConfig, ConfigError
from blocknas.blocks.resolve import ArchLike
from blocknas.blocks.schema import to_plain
from blocknas.search.data import Preprocessing
from blocknas.search.export_formats import FORMATS
from blocknas.search.latency import LatencyResult, LatencyTarget, example_input, export_onnx
from blocknas.search.latency.measure import measure_runner
from blocknas.search.latency.runtimes import OrtRunner, TorchRunner
from blocknas.search.threads import pinned_threads

from .checkpoint import load_model

__all__ = ["CHECK_BATCH_SIZES", "FORMATS", "ExportError", "ExportResult", "export_checkpoint", "export_model"]

log = logging.getLogger(__name__)

_FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
_RUNTIMES = {"onnx": "onnxruntime", "torchscript": "torchscript"}
CHECK_BATCH_SIZES = (1, 8)
"""Batch sizes every exported file is checked at against PyTorch (the ONNX batch axis is dynamic)."""


class ExportError(RuntimeError):
    """An exported file computes something other than the PyTorch model."""


@dataclass(frozen=True)
class ExportResult:
    """The exported files, how far each is from PyTorch, and each file's latency."""

    files: dict[str, Path]
    max_abs_diff: dict[str, float]
    latency: dict[str, LatencyResult]
    latency_path: Path


def export_model(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    target: LatencyTarget | None = None,
    atol: float = 1e-4,
    metadata: dict[str, str] | None = None,
) -> ExportResult:
    """Write ``model`` in each format to ``out_dir``, check it against PyTorch and time it.

    Args:
        model: The network (put in eval mode, not otherwise modified).
        input_shape: ``(channels, height, width)`` of one sample.
        out_dir: Folder for ``model.onnx``, ``model.torchscript.pt`` and ``latency.json``.
        formats: Any of ``onnx`` and ``torchscript``.
        target: Batch size, threads and repeat protocol of the timing; its ``runtime`` is
            set per format (``onnxruntime`` for ONNX, ``torchscript`` for TorchScript).
        atol: Largest allowed absolute difference between file and PyTorch outputs.
        metadata: String pairs for the ONNX file's ``metadata_props``.

    Raises:
        ExportError: the model's outputs are not finite, ``out_dir`` or a folder above it is a
            file, or a file's outputs differ from PyTorch's by more than ``atol``.
        ConfigError: ``atol`` is not a finite positive number.
        ValueError: an unknown format.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    _check_destination(Path(out_dir), atol)
    target = (target or LatencyTarget()).replace(isolate=False, reference=False)
    out = Path(out_dir)
    model = model.eval()
    x = example_input(input_shape, target.batch_size)
    checks = [
        torch.randn((n, *input_shape), generator=torch.Generator().manual_seed(i))
        for i, n in enumerate(sorted({*CHECK_BATCH_SIZES, target.batch_size}))
    ]
    with torch.inference_mode():
        expected = [model(c).numpy() for c in checks]
    if not all(np.isfinite(e).all() for e in expected):
        raise ExportError(
            "the network computes non-finite outputs (NaN or inf) on random inputs, so no file of it can be "
            "verified: its weights hold NaN or inf (a training that diverged?) or overflow; nothing was written"
        )
    out.mkdir(parents=True, exist_ok=True)
    files, diffs, latencies = {}, {}, {}
    for fmt in formats:
        path = out / _FILE_NAMES[fmt]
        if fmt == "onnx":
            how = _write_onnx(model, x, path, metadata or {})
            run = _onnx_outputs
        else:
            how, run = _write_torchscript(model, x, path), _torchscript_outputs
        diffs[fmt] = _max_abs_diff(run(path, checks), expected)
        if not diffs[fmt] <= atol:  # NaN included: a file computing non-finite outputs fails
            path.unlink()
            raise ExportError(f"{path} differs from the PyTorch model by {diffs[fmt]:.3g} (allowed {atol:g}); removed")
        latencies[fmt] = _file_latency(fmt, path, how, input_shape, target.replace(runtime=_RUNTIMES[fmt]))
        files[fmt] = path
        log.info("%s: max |diff| vs PyTorch %.2g, latency p50 %.4f ms", path, diffs[fmt], latencies[fmt].p50_ms)
    latency_path = out / "latency.json"
    latency_path.write_text(json.dumps(_latency_report(files, diffs, latencies, input_shape), indent=1))
    return ExportResult(files, diffs, latencies, latency_path)


def export_checkpoint(arch: ArchLike, checkpoint: str | Path, out_dir: str | Path, **kwargs: Any) -> ExportResult:
    """:func:`export_model` of the network ``arch`` with the weights in ``checkpoint``.

    The ONNX metadata is the architecture's recorded :class:`Preprocessing` (none if it has
    none), and the architecture is written beside the files as ``arch.yaml``.
    """
    model = load_model(arch, checkpoint)
    config: ArchConfig = model.arch
    preprocessing = Preprocessing.from_meta(config.meta)
    if preprocessing is None:
        log.warning("%s records no preprocessing (not trained by blocknas train): the ONNX file has none", arch)
    metadata = preprocessing.metadata() if preprocessing else {}
    result = export_model(model, (config.in_chans, *config.input_size), out_dir, metadata=metadata, **kwargs)
    config.to_yaml(Path(out_dir) / "arch.yaml")
    return result


def _write_onnx(model: nn.Module, x: torch.Tensor, path: Path, metadata: dict[str, str]) -> str:
    """Write the checked ONNX model, batch axis dynamic, with ``metadata``; returns the exporter used."""
    import onnx

    data, exporter = export_onnx(model, x, dynamic_batch=True)
    proto = onnx.load_from_string(data)
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())
    return exporter


def _write_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> str:
    with warnings.catch_warnings(), torch.no_grad():  # torch.jit is deprecated but still loadable from C++
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(model, x), str(path))
    return "trace"


def _onnx_outputs(path: Path, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [np.asarray(session.run(None, {name: x.numpy()})[0]) for x in inputs]


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").eval()


def _torchscript_outputs(path: Path, inputs: list[torch.Tensor]) -> list[np.ndarray]:
    module = _load_torchscript(path)
    with torch.inference_mode():
        return [module(x).numpy() for x in inputs]


def _check_destination(out: Path, atol: float) -> None:
    """Refuse, before anything is written, a tolerance that cannot fail and an output folder that is a file."""
    if not (math.isfinite(atol) and atol > 0):
        raise ConfigError(
            f"{atol} is not a finite positive number: it is the largest allowed difference from PyTorch's outputs "
            "(default 1e-4)",
            path="atol",
        )
    blocker = next((p for p in (out, *out.parents) if (p.exists() or p.is_symlink()) and not p.is_dir()), None)
    if blocker is not None:
        raise ExportError(f"cannot export into {out}: {blocker} is a file, not a folder; give a new or existing folder")


def _max_abs_diff(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    return max(float(np.abs(g - e).max()) for g, e in zip(got, expected))


def _file_latency(
    fmt: str, path: Path, exporter: str, input_shape: tuple[int, int, int], target: LatencyTarget
) -> LatencyResult:
    """Time the file itself: an ORT session on its bytes, or the loaded TorchScript module frozen."""
    x = example_input(input_shape, target.batch_size)
    with pinned_threads(target.threads, target.inter_op_threads):
        if fmt == "onnx":
            runner: Any = OrtRunner(
                path.read_bytes(),
                x.numpy(),
                threads=target.threads,
                inter_op_threads=target.inter_op_threads,
                exporter=exporter,
            )
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frozen = torch.jit.freeze(_load_torchscript(path))
            runner = TorchRunner("torchscript", frozen, x, torch.inference_mode)
        return measure_runner(runner, target)


def _latency_report(
    files: dict[str, Path],
    diffs: dict[str, float],
    latencies: dict[str, LatencyResult],
    input_shape: tuple[int, int, int],
) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for fmt, path in files.items():
        result = latencies[fmt]
        report[fmt] = {
            "file": path.name,
            "input_shape": [result.target.batch_size, *input_shape],
            "max_abs_diff_vs_torch": diffs[fmt],
            **result.as_metrics(),
            "stop_reason": result.stop_reason,
            "target": to_plain(result.target),
            "fingerprint_id": result.fingerprint_id,
            "fingerprint": result.fingerprint,
        }
    return report
