"""Client of the latency agent (:mod:`.agent`): send an ONNX model, get the device's measurement.

Errors are never papered over: an agent that cannot be reached, answers too slowly, refuses
the token or answers something unexpected raises :class:`AgentError`, naming the agent and
what to do. There is no fallback to measuring on this machine.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .agent import AGENT_API, PROTOCOL_HEADER, AgentConfigError
from .target import LatencyTarget

__all__ = ["AGENT_ERRORS", "AgentAnswer", "AgentClient", "AgentError", "AgentLost"]


class AgentError(RuntimeError):
    """The latency agent could not be used: unreachable, too slow, a wrong token or a bad answer."""


class AgentLost(KeyboardInterrupt):
    """The agent stopped answering in the middle of a study: this worker stops, the trial is retried.

    It derives from :class:`KeyboardInterrupt` on purpose: like Ctrl-C it ends the worker
    rather than one trial (Optuna fails the running trial and re-raises it, where it would
    catch an ordinary exception and go on to fail every later trial the same way).
    """


AGENT_ERRORS: tuple[type[BaseException], ...] = (AgentConfigError, AgentError, AgentLost)
"""What the command line reports as one paragraph with exit status 2."""


@dataclass(frozen=True)
class AgentAnswer:
    """One measurement as the agent answered it (:mod:`.agent`'s ``/measure`` JSON).

    Attributes:
        summary: :class:`.stats.TimingSummary` fields (``None`` for a non-finite value).
        stop_reason: Why the protocol stopped.
        fingerprint: The device's host fingerprint.
        settings: ONNX Runtime settings and threads the agent used.
        input_shape: Shape of the input it timed.
        input_dtype: NumPy dtype name of that input.
    """

    summary: dict[str, Any]
    stop_reason: str
    fingerprint: dict[str, str]
    settings: dict[str, str]
    input_shape: tuple[int, ...]
    input_dtype: str


class AgentClient:
    """Talks to one agent.

    Args:
        url: ``http://host:port`` of the agent.
        token: Its shared token, or ``None`` for an agent without one.
        timeout_s: Longest wait for one answer (a measurement waiting in the agent's queue included).
    """

    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    @classmethod
    def for_target(cls, target: LatencyTarget) -> AgentClient:
        """The client of ``target.agent``, with the token from ``target.token_env``.

        Raises:
            AgentError: ``token_env`` names a variable that is not set.
        """
        if target.agent is None:
            raise ValueError("the latency target has no agent")
        token = None
        if target.token_env is not None:
            token = os.environ.get(target.token_env)
            if not token:
                raise AgentError(
                    f"latency.token_env: the environment variable {target.token_env} is not set; export it with the "
                    f"token the agent at {target.agent} was started with"
                )
        return cls(target.agent, token=token, timeout_s=target.agent_timeout_s)

    def health(self) -> dict[str, Any]:
        """The agent's ``/health`` answer: its host fingerprint and limits."""
        answer = self._request("GET", "/health")
        if not isinstance(answer.get("fingerprint"), dict):
            raise AgentError(f"latency agent {self.url}: /health answered without a fingerprint")
        return answer

    def measure(self, model: bytes, target: LatencyTarget) -> AgentAnswer:
        """Measure the serialized ONNX ``model`` on the agent with ``target``'s protocol and threads."""
        protocol = {
            key: getattr(target, key)
            for key in ("warmup", "min_repeats", "max_repeats", "rel_precision", "time_cap_s", "min_time_s")
        }
        protocol.update(threads=target.threads, inter_op_threads=target.inter_op_threads)
        headers = {PROTOCOL_HEADER: json.dumps(protocol), "Content-Type": "application/octet-stream"}
        try:
            answer = self._request("POST", "/measure", model, headers)
        except AgentError:
            self._check_size(len(model))  # the agent closes the connection on a model over its limit
            raise
        try:
            return AgentAnswer(
                summary=dict(answer["summary"]),
                stop_reason=str(answer["stop_reason"]),
                fingerprint={str(k): str(v) for k, v in answer["fingerprint"].items()},
                settings={str(k): str(v) for k, v in answer["settings"].items()},
                input_shape=tuple(int(d) for d in answer["input"]["shape"]),
                input_dtype=str(answer["input"]["dtype"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AgentError(f"latency agent {self.url}: unexpected answer to /measure ({exc!r})") from None

    def _check_size(self, size: int) -> None:
        """Raise the clear error if the agent answers and ``size`` bytes are over its limit; else nothing."""
        try:
            limit = int(self.health().get("max_model_bytes", 0))
        except (AgentError, TypeError, ValueError):
            return
        if 0 < limit < size:
            raise AgentError(
                f"latency agent {self.url} refused a model of {size / 2**20:.1f} MiB: it accepts at most "
                f"{limit / 2**20:.0f} MiB (its --max-model-mib)"
            ) from None

    def _request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        headers = dict(headers or {})
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return self._parsed(response.read())
        except urllib.error.HTTPError as exc:
            raise self._refused(exc) from None
        except TimeoutError as exc:
            raise AgentError(self._too_slow(exc)) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise AgentError(self._too_slow(exc.reason)) from None
            raise AgentError(
                f"latency agent {self.url} is unreachable ({exc.reason}); start it on the device with "
                "'blocknas latency-agent' (or the single-file agent) and check latency.agent"
            ) from None
        except (ConnectionError, OSError) as exc:
            raise AgentError(f"latency agent {self.url}: the connection failed ({exc})") from None

    def _too_slow(self, exc: BaseException) -> str:
        return (
            f"latency agent {self.url} did not answer within {self.timeout_s:g} s ({exc or 'timed out'}); "
            "is it busy or stuck? raise latency.agent_timeout_s if its measurements take longer"
        )

    def _parsed(self, data: bytes) -> dict[str, Any]:
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("ok") is not True:
            raise AgentError(f"latency agent {self.url}: not an agent's answer ({data[:200]!r})")
        if answer.get("api") != AGENT_API:
            raise AgentError(
                f"latency agent {self.url} speaks API {answer.get('api')!r}, this blocknas {AGENT_API}: "
                "use the agent of this blocknas version ('blocknas latency agent-script')"
            )
        return answer

    def _refused(self, exc: urllib.error.HTTPError) -> AgentError:
        try:
            message = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            message = ""
        if exc.code == 401:
            return AgentError(
                f"latency agent {self.url} refused the token (HTTP 401); set latency.token_env to the variable "
                "holding the token the agent was started with (its --token-env)"
            )
        return AgentError(f"latency agent {self.url} answered HTTP {exc.code}: {message or exc.reason}")
