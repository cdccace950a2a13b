"""The host part of a device fingerprint, and the short id of a fingerprint, with the standard library alone.

A latency is only comparable with another taken on the same CPU, with the same software and
the same runtime settings. This module reads what the device itself can say (CPU model and
instruction sets, cores, CPU quota, OS, Python, ONNX Runtime and NumPy versions) without
importing torch, so the latency agent (:mod:`.agent`) reports the same fields on a device
that has no torch; :mod:`.fingerprint` adds the torch side for local measurements.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = ["NOT_HASHED", "fingerprint_id", "host_fingerprint", "package_version"]

NOT_HASHED = frozenset({"hostname"})
"""Informational fields left out of :func:`fingerprint_id` (containers get new host names, the hardware stays)."""
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


def package_version(package: str) -> str:
    """The installed version of ``package``, or ``absent``."""
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


def _cpu_model(info: Mapping[str, str]) -> str:
    """The CPU's name (x86: ``model name`` and family; ARM boards have none: the machine and the CPU part)."""
    model = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info:
        model += f" (family {info['cpu family']} model {info.get('model', '?')} stepping {info.get('stepping', '?')})"
    elif "CPU part" in info:
        model += f" (implementer {info.get('CPU implementer', '?')} part {info['CPU part']})"
    return model


def host_fingerprint() -> dict[str, str]:
    """CPU, cores, quota, OS, Python, ONNX Runtime and NumPy of this machine (a fresh dict each call)."""
    return dict(_host())


@lru_cache(maxsize=1)
def _host() -> dict[str, str]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": _cpu_model(info),
        "cpu_isa": ",".join(f for f in _ISA_FLAGS if f in flags) or "unknown",
        "logical_cpus": str(os.cpu_count()),
        "usable_cpus": str(usable),
        "cpu_quota": _cpu_quota(),
        "os": f"{platform.system()}-{platform.machine()}",
        "hostname": platform.node(),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "onnxruntime": package_version("onnxruntime"),
        "numpy": package_version("numpy"),
    }


def fingerprint_id(fingerprint: Mapping[str, str]) -> str:
    """Stable 10-hex-digit id of a fingerprint (``hostname`` excluded)."""
    hashed = {k: v for k, v in fingerprint.items() if k not in NOT_HASHED}
    return hashlib.sha1(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:10]
