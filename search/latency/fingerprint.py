"""Device fingerprint: what a latency number was measured on (its short id is :func:`.host.fingerprint_id`).

A latency is only comparable with another taken on the same CPU (or GPU), with the same
software versions and the same runtime settings, so every result and every lookup-table
entry carries this fingerprint: the host's (:func:`.host.host_fingerprint`, plus torch's
side here, or a latency agent's own host fingerprint) and the target's runtime settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch

from .host import host_fingerprint, package_version
from .runtimes import runtime_settings
from .target import LatencyTarget

__all__ = ["device_fingerprint"]


def _torch_parallel_backend() -> str:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.partition(":")[2].strip()
    return "unknown"


@lru_cache(maxsize=1)
def _torch_side() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "torch_parallel": _torch_parallel_backend(),
        "onnx": package_version("onnx"),
        "timm": package_version("timm"),
    }


def _gpu_fingerprint() -> dict[str, str]:
    if not torch.cuda.is_available():
        return {"gpu": "none"}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {
        "gpu": props.name,
        "gpu_memory_mib": str(props.total_memory // 2**20),
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
    }


def device_fingerprint(target: LatencyTarget, host: Mapping[str, str] | None = None) -> dict[str, str]:
    """Hardware, software versions and runtime settings behind a latency measured for ``target``.

    Protocol settings (warm-up, repeats, precision, time cap, isolation, reference, mode)
    are not part of it: they change how precisely a latency is known, not what it is.

    Args:
        target: The latency target; its runtime, threads, batch size and dtype are recorded.
        host: The measuring device's host fingerprint (a latency agent's); default this
            machine's, with its torch, ONNX and timm versions (and GPU for ``cuda``).

    Returns:
        Flat ``str -> str`` mapping, ready for MLflow tags.
    """
    fingerprint = dict(host) if host is not None else {**host_fingerprint(), **_torch_side()}
    if host is None and target.runtime == "cuda":
        fingerprint.update(_gpu_fingerprint())
    fingerprint.update(
        runtime=target.runtime,
        threads=str(target.threads),
        inter_op_threads=str(target.inter_op_threads),
        batch_size=str(target.batch_size),
        dtype=target.dtype,
    )
    fingerprint.update(runtime_settings(target.runtime))
    return fingerprint
