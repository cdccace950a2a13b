"""Device fingerprint: what a latency number was measured on, and a stable short id of it.

A latency is only comparable with another taken on the same CPU (or GPU), with the same
software versions and the same runtime settings, so every result and every lookup-table
entry carries this fingerprint. The id hashes everything except ``hostname`` (informational:
containers get new host names, the hardware and software stay the same).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

from .runtimes import runtime_settings
from .target import LatencyTarget

__all__ = ["NOT_HASHED", "device_fingerprint", "fingerprint_id"]

NOT_HASHED = frozenset({"hostname"})
_ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_fp16",
    "neon",
    "asimd",
    "sve",
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpuinfo() -> dict[str, str]:
    """First processor's entries of /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _cpu_quota() -> str:
    """cgroup v2 CPU quota (``max`` or e.g. ``200000 100000``), ``unknown`` where unreadable."""
    try:
        return Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    except OSError:
        return "unknown"


def _torch_parallel_backend() -> str:
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.partition(":")[2].strip()
    return "unknown"


@lru_cache(maxsize=1)
def _host_fingerprint() -> dict[str, str]:
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        model += f" (family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')})"
    flags = set((info.get("flags") or info.get("Features") or "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": model,
        "cpu_isa": ",".join(f for f in _ISA_FLAGS if f in flags) or "unknown",
        "logical_cpus": str(os.cpu_count()),
        "usable_cpus": str(usable),
        "cpu_quota": _cpu_quota(),
        "os": f"{platform.system()}-{platform.machine()}",
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_parallel": _torch_parallel_backend(),
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "timm": _version("timm"),
        "numpy": _version("numpy"),
        "python_impl": sys.implementation.name,
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


def device_fingerprint(target: LatencyTarget) -> dict[str, str]:
    """Hardware, software versions and runtime settings behind a latency measured for ``target``.

    Protocol settings (warm-up, repeats, precision, time cap, isolation, reference, mode)
    are not part of it: they change how precisely a latency is known, not what it is.

    Args:
        target: The latency target; its runtime, threads, batch size and dtype are recorded.

    Returns:
        Flat ``str -> str`` mapping, ready for MLflow tags.
    """
    fingerprint = dict(_host_fingerprint())
    if target.runtime == "cuda":
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


def fingerprint_id(fingerprint: dict[str, str]) -> str:
    """Stable 10-hex-digit id of a fingerprint (``hostname`` excluded)."""
    hashed = {k: v for k, v in fingerprint.items() if k not in NOT_HASHED}
    return hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]
