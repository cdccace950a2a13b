"""``LatencyTarget``: where and how a latency is measured (the ``latency:`` key of every config)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import check_range
from blocknas.search.threads import MAX_THREADS

from .stats import StopRule

__all__ = [
    "MAX_AGENT_TIMEOUT_S",
    "MAX_LATENCY_BATCH",
    "MAX_REPEATS",
    "MAX_TIMING_S",
    "RUNTIMES",
    "LatencyTarget",
    "Runtime",
    "check_agent_url",
]

MAX_LATENCY_BATCH = 4096
"""Largest batch a latency is measured at."""
MAX_REPEATS = 1_000_000
"""Most warm-up or timed calls."""
MAX_TIMING_S = 3600.0
"""Longest ``time_cap_s`` / ``min_time_s``: an hour on one network."""
MAX_AGENT_TIMEOUT_S = 3600.0
"""Longest ``agent_timeout_s``."""
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

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
            that decides which chunks count as quiet (:mod:`.stats`).
        time_cap_s: ... or when this much time has been spent timing.
        min_time_s: Time at least this long (capped by ``time_cap_s``), so the chunks span
            several load phases of a shared machine and the quiet ones can be told apart.
        isolate: Measure in a separate spawned worker process.
        reference: Interleave with a fixed reference network; report the ratio too.
        mode: What the search objective optimises: ``measured`` p50, or ``predicted``
            from the per-block lookup table (the measurement is still logged).
        agent: ``http://host:port`` of a latency agent (``blocknas latency-agent``) on the
            device to deploy to: every network is exported to ONNX here and measured there.
            ONNX Runtime only; the study records the agent's device fingerprint.
        token_env: Environment variable holding the agent's shared token (never the token itself).
        agent_timeout_s: Longest wait for one answer of the agent (queue included).
        table: A lookup table calibrated for a device (``blocknas latency calibrate``), used
            as it is by ``mode: predicted``: nothing is measured on this machine, and a part
            missing from it is measured on ``agent`` if one is given (an error otherwise).
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
    agent: str | None = None
    token_env: str | None = None
    agent_timeout_s: float = 120.0
    table: str | None = None

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
        self._check_device_keys()

    def _check_device_keys(self) -> None:
        """``agent``, ``token_env`` and ``table`` fit together and with the runtime."""
        check_range(self.agent_timeout_s, "agent_timeout_s", 0, MAX_AGENT_TIMEOUT_S, above=True)
        if self.agent is not None:
            check_agent_url(self.agent, "agent")
            for key, why in (("runtime", "runs ONNX Runtime"), ("reference", "measures one model at a time")):
                wrong = self.runtime != "onnxruntime" if key == "runtime" else self.reference
                if wrong:
                    raise ConfigError(f"{getattr(self, key)!r}: the latency agent {why}", path=key)
        if self.token_env is not None:
            if self.agent is None:
                raise ConfigError("a token is only sent to a latency agent: set agent too", path="token_env")
            if not _ENV_NAME.fullmatch(self.token_env):
                raise ConfigError(f"{self.token_env!r} is not an environment variable name", path="token_env")
        if self.table is not None and self.mode != "predicted":
            raise ConfigError("a lookup table is used by mode: predicted; set it too", path="table")

    def replace(self, **changes: Any) -> LatencyTarget:
        """A validated copy with fields changed."""
        return dataclasses.replace(self, **changes)

    def stop_rule(self) -> StopRule:
        return StopRule(self.min_repeats, self.max_repeats, self.rel_precision, self.time_cap_s, self.min_time_s)


def check_agent_url(url: str, path: str = "agent") -> str:
    """``url`` if it is ``http(s)://host:port`` with nothing else (no credentials, path or query).

    Raises:
        ConfigError: What is wrong with it, at ``path``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{url!r} is not an agent address; write http://HOST:PORT", path=path)
    if parts.username or parts.password:
        raise ConfigError("an agent address carries no credentials: put the token in token_env", path=path)
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: write the agent's address as http://HOST:PORT, nothing more", path=path)
    return url
