"""The latency agent: measures ONNX models on the device it runs on, for searches running elsewhere.

A small HTTP server (standard library only) that a user starts on the target device::

    GET  /health   -> {"ok": true, "fingerprint": {...}, "fingerprint_id": "...", ...}
    POST /measure  body: the ONNX model; header X-Blocknas-Protocol: {"warmup": 10, ...}
                   -> {"ok": true, "summary": {...}, "stop_reason": "...", "fingerprint": {...}, ...}

It runs the project's measuring protocol (:func:`.ort_timing.run_protocol`: warm-up, chunks
until the quiet-chunk median's confidence interval is tight) on an ONNX Runtime session,
and answers with the statistics and the device's host fingerprint. Nothing here imports
torch or SciPy: with :mod:`.host`, :mod:`.stats`, :mod:`.ort_timing` and its flags
(:mod:`blocknas.search.agent_flags`) it is what :func:`write_agent_zipapp` packs into a
single file that needs only ONNX Runtime and NumPy.

Safety: it listens on 127.0.0.1 unless told otherwise, and any other address needs
``--allow-remote`` and a shared token (``--token-env NAME``), checked with
:func:`hmac.compare_digest` on every request. A model is refused from its declared size,
before its body is read; it is written only inside a :class:`tempfile.TemporaryDirectory`.
One measurement runs at a time (a lock; at most :data:`MAX_WAITING` requests wait for it),
so searches sharing a device do not disturb each other's numbers. Every error, malformed
HTTP included, is answered as JSON and the agent keeps serving.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import os
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from ..agent_flags import DEFAULT_AGENT_PORT, DEFAULT_MAX_MODEL_MIB, add_agent_arguments
from .host import fingerprint_id, host_fingerprint
from .ort_timing import OrtSession, run_protocol
from .stats import StopRule

__all__ = [
    "AGENT_API",
    "DEFAULT_AGENT_PORT",
    "DEFAULT_MAX_MODEL_MIB",
    "MAX_WAITING",
    "PROTOCOL_HEADER",
    "AgentConfigError",
    "AgentServer",
    "AgentSettings",
    "ProtocolSettings",
    "add_agent_arguments",
    "agent_settings",
    "parse_protocol",
    "serve_agent",
    "write_agent_zipapp",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

AGENT_API = 1
"""Version of the request and answer format; the client refuses an agent with another."""
MAX_MODEL_MIB = 4096
MAX_WAITING = 8
"""Requests that may wait for the measurement lock; more are answered 503."""
PROTOCOL_HEADER = "X-Blocknas-Protocol"
MIN_TOKEN_CHARS = 16
SOCKET_TIMEOUT_S = 60.0
"""A client that sends nothing for this long is dropped (its thread is freed)."""
_LOOPBACK_NAMES = ("localhost",)


class AgentConfigError(ValueError):
    """The agent cannot start as asked: an exposed address without a token, a bad flag, a port in use."""


# -- the protocol a request asks for --------------------------------------------------------


@dataclass(frozen=True)
class ProtocolSettings:
    """The measuring protocol of one request: the stop rule, warm-up calls and the session's threads."""

    rule: StopRule = StopRule()
    warmup: int = 10
    threads: int = 1
    inter_op_threads: int = 1


_BOUNDS: dict[str, tuple[type, float, float]] = {
    "warmup": (int, 0, 100_000),
    "min_repeats": (int, 1, 1_000_000),
    "max_repeats": (int, 1, 1_000_000),
    "rel_precision": (float, 1e-6, 0.5),
    "time_cap_s": (float, 1e-3, 600.0),
    "min_time_s": (float, 0.0, 600.0),
    "threads": (int, 1, 1024),
    "inter_op_threads": (int, 1, 1024),
}
"""Allowed type and range of each protocol key: one request holds the device for at most ~10 minutes."""
_RULE_KEYS = {f.name for f in dataclasses.fields(StopRule)}


def parse_protocol(text: str | None) -> ProtocolSettings:
    """The protocol of a request's header (JSON object); defaults for missing keys.

    Raises:
        ValueError: Not a JSON object, an unknown key, a wrong type or a value out of range.
    """
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{PROTOCOL_HEADER} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{PROTOCOL_HEADER} must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_BOUNDS))
    if unknown:
        raise ValueError(f"unknown protocol key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_BOUNDS)}")
    for key, value in data.items():
        kind, lo, hi = _BOUNDS[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not isinstance(value, int)) or not math.isfinite(value):
            raise ValueError(f"protocol key {key!r}: {value!r} is not {'an integer' if kind is int else 'a number'}")
        if not lo <= value <= hi:
            raise ValueError(f"protocol key {key!r}: {value} is outside [{lo}, {hi}]")
    rule = StopRule(**{k: v for k, v in data.items() if k in _RULE_KEYS})
    if rule.max_repeats < rule.min_repeats:
        raise ValueError(f"protocol: max_repeats {rule.max_repeats} < min_repeats {rule.min_repeats}")
    return ProtocolSettings(rule, **{k: v for k, v in data.items() if k not in _RULE_KEYS})


# -- settings and start-up --------------------------------------------------------------------


@dataclass(frozen=True)
class AgentSettings:
    """How the agent listens.

    Attributes:
        host: Address to bind; loopback unless ``allow_remote``.
        port: TCP port (0: any free one, announced when listening).
        token: Shared secret every request must carry (``Authorization: Bearer``), or None.
        max_model_bytes: Largest model accepted.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_AGENT_PORT
    token: str | None = dataclasses.field(default=None, repr=False)
    max_model_bytes: int = DEFAULT_MAX_MODEL_MIB * 2**20


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def agent_settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> AgentSettings:
    """Checked settings from the flags: a non-loopback address needs ``--allow-remote`` and a token.

    Raises:
        AgentConfigError: What is wrong with the flags, and what would be right.
    """
    environ = dict(os.environ) if environ is None else environ
    if not 0 <= args.port <= 65_535:
        raise AgentConfigError(f"--port {args.port} is not a port; give 1-65535 (0: any free port)")
    if not 1 <= args.max_model_mib <= MAX_MODEL_MIB:
        raise AgentConfigError(f"--max-model-mib {args.max_model_mib} is outside 1-{MAX_MODEL_MIB}")
    token = None
    if args.token_env:
        token = environ.get(args.token_env, "")
        if len(token) < MIN_TOKEN_CHARS:
            raise AgentConfigError(
                f"--token-env {args.token_env}: the variable is unset or shorter than {MIN_TOKEN_CHARS} characters; "
                "set it to a long random secret, e.g. export "
                f"{args.token_env}=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')\""
            )
    if not _is_loopback(args.host):
        if not args.allow_remote:
            raise AgentConfigError(
                f"--host {args.host} opens the agent to the network; pass --allow-remote and --token-env NAME "
                "(a shared token) to do that on purpose, or keep the default 127.0.0.1 and use an SSH tunnel"
            )
        if token is None:
            raise AgentConfigError(f"--host {args.host} with --allow-remote needs a shared token: add --token-env NAME")
    return AgentSettings(args.host, args.port, token, args.max_model_mib * 2**20)


# -- the server -------------------------------------------------------------------------------


class AgentServer(ThreadingHTTPServer):
    """The HTTP server with the agent's settings, its measurement lock and its waiting room."""

    daemon_threads = True

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.measure_lock = threading.Lock()
        self.waiting = threading.BoundedSemaphore(MAX_WAITING + 1)
        self.fingerprint = host_fingerprint()
        self.fingerprint_id = fingerprint_id(self.fingerprint)
        self.address_family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        try:
            super().__init__((settings.host, settings.port), _Handler)
        except OSError as exc:
            raise AgentConfigError(f"cannot listen on {settings.host}:{settings.port}: {exc}") from None

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}"


class _RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _finite(value: Any) -> Any:
    """JSON has no infinity: a non-finite float becomes null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


class _Handler(BaseHTTPRequestHandler):
    server: AgentServer
    server_version = f"blocknas-agent/{AGENT_API}"
    timeout = SOCKET_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    # every answer, errors from http.server's own parsing included, is JSON
    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        self.request_version = "HTTP/1.0"  # a garbled request line reads as HTTP/0.9, which has no status line
        self._send_json(code, {"ok": False, "error": message or HTTPStatus(code).phrase})

    def _send_json(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, allow_nan=False).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.log_message('"%s" %s %d', self.requestline, code, len(data))  # once the answer is sent

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Nothing: :meth:`_send_json` logs each request after its answer is sent."""

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _answer(self, handle: Any) -> None:
        try:
            self._check_token()
            self._send_json(HTTPStatus.OK, handle())
        except _RequestError as exc:
            self.send_error(exc.status, str(exc))
        except Exception as exc:  # a bug must not take the agent down: answer it and go on
            log.exception("request failed")
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _check_token(self) -> None:
        token = self.server.settings.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        ok = hmac.compare_digest(value.strip().encode(), token.encode())
        if scheme.lower() != "bearer" or not ok:
            raise _RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong token (Authorization: Bearer <token>)")

    def do_GET(self) -> None:
        if self.path != "/health":
            self.close_connection = True
            self._answer(lambda: _raise(HTTPStatus.NOT_FOUND, f"no {self.path}; GET /health or POST /measure"))
            return
        self._answer(self._health)

    def do_POST(self) -> None:
        if self.path != "/measure":
            self.close_connection = True  # the body is not read
            self._answer(lambda: _raise(HTTPStatus.NOT_FOUND, f"no {self.path}; GET /health or POST /measure"))
            return
        self._answer(self._measure)

    def _health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "api": AGENT_API,
            "fingerprint": self.server.fingerprint,
            "fingerprint_id": self.server.fingerprint_id,
            "max_model_bytes": self.server.settings.max_model_bytes,
            "busy": self.server.measure_lock.locked(),
        }

    def _read_model(self) -> bytes:
        """The body, refused from its declared length before a byte of it is read."""
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_text is None:
            self.close_connection = True
            raise _RequestError(HTTPStatus.LENGTH_REQUIRED, "send the model with a Content-Length (no chunking)")
        try:
            length = int(length_text)
        except ValueError:
            length = -1
        limit = self.server.settings.max_model_bytes
        if not 0 < length <= limit:
            self.close_connection = True
            raise _RequestError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > limit else HTTPStatus.BAD_REQUEST,
                f"model of {length_text} bytes refused: the agent accepts 1 to {limit} bytes (--max-model-mib)",
            )
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise _RequestError(HTTPStatus.BAD_REQUEST, f"body ended after {len(body)} of {length} bytes")
        return body

    def _measure(self) -> dict[str, Any]:
        try:
            protocol = parse_protocol(self.headers.get(PROTOCOL_HEADER))
        except ValueError as exc:
            self.close_connection = True  # the body is not read
            raise _RequestError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        model = self._read_model()
        if not self.server.waiting.acquire(blocking=False):
            raise _RequestError(HTTPStatus.SERVICE_UNAVAILABLE, f"{MAX_WAITING} measurements already wait; retry later")
        try:
            with tempfile.TemporaryDirectory(prefix="blocknas-agent-") as folder, self.server.measure_lock:
                return self._measure_file(Path(folder) / "model.onnx", model, protocol)
        finally:
            self.server.waiting.release()

    def _measure_file(self, path: Path, model: bytes, protocol: ProtocolSettings) -> dict[str, Any]:
        path.write_bytes(model)
        start = time.monotonic()
        session = _checked(
            lambda: OrtSession(str(path), threads=protocol.threads, inter_op_threads=protocol.inter_op_threads),
            "not a model ONNX Runtime can run",
        )
        run = _checked(lambda: run_protocol(session, protocol.rule, protocol.warmup), "the model failed to run")
        x = session.input
        return {
            "ok": True,
            "api": AGENT_API,
            "summary": {k: _finite(v) for k, v in dataclasses.asdict(run.summary).items()},
            "stop_reason": run.stop_reason,
            "input": {"shape": list(x.shape), "dtype": str(x.dtype)},
            "settings": {
                **session.settings,
                "threads": protocol.threads,
                "inter_op_threads": protocol.inter_op_threads,
            },
            "fingerprint": self.server.fingerprint,
            "fingerprint_id": self.server.fingerprint_id,
            "started_s": start,  # the agent's monotonic clock: spans of two measurements never overlap
            "seconds": time.monotonic() - start,
        }


def _raise(status: HTTPStatus, message: str) -> dict[str, Any]:
    raise _RequestError(status, message)


def _checked(make: Callable[[], T], what: str) -> T:
    """``make()``, with any error it raises answered as a 400 that says ``what`` failed and why."""
    try:
        return make()
    except Exception as exc:
        raise _RequestError(HTTPStatus.BAD_REQUEST, f"{what}: {type(exc).__name__}: {exc}"[:2000]) from None


# -- running it -------------------------------------------------------------------------------


def serve_agent(settings: AgentSettings, *, announce: Callable[[str], None] = print) -> None:
    """Listen until interrupted; ``announce`` gets the one line saying where (tests read the port from it)."""
    server = AgentServer(settings)
    token = "token required" if settings.token else "no token"
    announce(
        f"blocknas latency agent listening on {server.url} ({token}); device {server.fingerprint['cpu_model']}, "
        f"fingerprint {server.fingerprint_id}"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the single-file agent (``python blocknas-agent.pyz --help``)."""
    parser = argparse.ArgumentParser(prog="blocknas-agent", description="blocknas latency agent (ONNX Runtime)")
    add_agent_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        serve_agent(agent_settings(args), announce=lambda line: print(line, flush=True))
    except AgentConfigError as exc:
        print(f"blocknas-agent: error: {exc}", file=sys.stderr)
        return 2
    return 0


AGENT_MODULES = ("host", "stats", "ort_timing", "agent")
"""The modules the single-file agent holds: this one and the torch-free ones it imports."""


def write_agent_zipapp(out: str | Path) -> Path:
    """Write the agent as one file, ``python3 FILE --help`` (needs only ONNX Runtime and NumPy).

    The file is a zip application (PEP 441) of :data:`AGENT_MODULES`, copied as they are into
    ``blocknas_agent/latency/``, beside the flags (``blocknas_agent/agent_flags.py``) where the
    relative imports expect them: the device runs the very code a local measurement runs.
    """
    out = Path(out)
    here = Path(__file__).resolve().parent
    with out.open("wb") as handle:
        handle.write(b"#!/usr/bin/env python3\n")  # a zip is read from its end: a first line may precede it
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("blocknas_agent/__init__.py", '"""blocknas latency agent (single file)."""\n')
            archive.write(here.parent / "agent_flags.py", "blocknas_agent/agent_flags.py")
            archive.writestr("blocknas_agent/latency/__init__.py", "")
            for name in AGENT_MODULES:
                archive.write(here / f"{name}.py", f"blocknas_agent/latency/{name}.py")
            archive.writestr(
                "__main__.py", "import sys\n\nfrom blocknas_agent.latency.agent import main\n\nsys.exit(main())\n"
            )
    out.chmod(0o755)
    return out
