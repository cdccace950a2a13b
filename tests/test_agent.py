"""The latency agent as a real process: the single-file agent, started with torch and SciPy made unimportable,
pinned to one core, on 127.0.0.1; real ONNX Runtime measurements, real HTTP, garbage included."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch

import blocknas.blocks  # noqa: F401 - registers the blocknet models
from blocknas.search.cli import main
from blocknas.search.latency import (
    AgentClient,
    AgentError,
    LatencyTarget,
    check_agent,
    example_input,
    export_onnx,
    measure_latency,
    write_agent_zipapp,
)

TOKEN = "a-long-test-token-0123456789"
FAST = {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1, "min_time_s": 0.0}
TORCH_FREE = "import runpy, sys; sys.modules.update(torch=None, scipy=None, timm=None); runpy.run_path({!r}, run_name='__main__')"


@dataclass
class Agent:
    """A running agent process and its address."""

    process: subprocess.Popen[str]
    url: str
    announced: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def _pin() -> list[str]:
    """``taskset -c <last usable core>`` where it exists and there is more than one core."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return ["taskset", "-c", str(cores[-1])] if shutil.which("taskset") and len(cores) > 1 else []


def start_agent(folder: Path, *flags: str, port: int = 0) -> Agent:
    """The single-file agent in a fresh process without torch or SciPy, on ``port`` (0: any free one)."""
    script = folder / "blocknas-agent.pyz"
    if not script.exists():
        write_agent_zipapp(script)
    argv = [*_pin(), sys.executable, "-c", TORCH_FREE.format(str(script)), "--port", str(port), *flags]
    env = {**os.environ, "AGENT_TOKEN": TOKEN}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 1.0)
        line = process.stdout.readline() if ready else ""
        if "listening on" in line:
            url = line.split("listening on ")[1].split()[0]
            return Agent(process, url, line)
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited: {line}{process.stdout.read()}")
    process.kill()
    raise RuntimeError("the agent did not announce its address within 60 s")


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent without a token, shared by the tests that leave it running."""
    running = start_agent(tmp_path_factory.mktemp("agent"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def tiny_onnx() -> bytes:
    model = timm.create_model("blocknet_separable", in_chans=1)
    return export_onnx(model, example_input((1, 16, 16), 1))[0]


def _raw(url: str, payload: bytes) -> tuple[int, dict[str, object]]:
    """Send raw bytes to the agent; its status and JSON answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(payload)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/measure") -> tuple[int, dict]:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.request("POST", path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _healthy(url: str) -> bool:
    return AgentClient(url, timeout_s=10).health()["ok"] is True


def test_the_agent_measures_without_torch_with_the_projects_protocol(agent: Agent, tiny_onnx: bytes) -> None:
    answer = AgentClient(agent.url).measure(tiny_onnx, LatencyTarget(**FAST))
    assert answer.input_shape == (1, 1, 16, 16) and answer.input_dtype == "float32"
    assert answer.summary["p50_ms"] > 0 and answer.summary["n_samples"] >= 3
    assert answer.stop_reason in ("precision", "time_cap", "max_repeats")
    assert "torch" not in answer.fingerprint and answer.fingerprint["onnxruntime"] != "absent"
    assert answer.settings["ort_execution_mode"] == "ORT_SEQUENTIAL" and answer.settings["threads"] == "1"
    if _pin():
        assert answer.fingerprint["usable_cpus"] == "1", "the agent runs pinned to one core"


def test_a_study_target_measures_on_the_agent_with_its_fingerprint(agent: Agent) -> None:
    target = LatencyTarget(agent=agent.url, **FAST)
    model = timm.create_model("blocknet_separable", in_chans=1)
    remote = measure_latency(model, (1, 16, 16), target)
    local = measure_latency(model, (1, 16, 16), target.replace(agent=None))
    assert remote.p50_ms > 0 and remote.fingerprint["onnx_exporter"] == local.fingerprint["onnx_exporter"]
    assert "torch" not in remote.fingerprint and "torch" in local.fingerprint
    assert remote.fingerprint_id != local.fingerprint_id, "another device, another fingerprint"
    assert check_agent(target, (1, 16, 16)).fingerprint_id == remote.fingerprint_id


def test_an_oversized_model_is_refused_before_its_body_is_read(tmp_path: Path, tiny_onnx: bytes) -> None:
    agent = start_agent(tmp_path, "--max-model-mib", "1")
    try:
        header = b"POST /measure HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n"
        status, answer = _raw(agent.url, header)  # 1 GiB announced, not a byte of it sent
        assert status == 413 and "refused" in str(answer["error"]) and answer["ok"] is False
        with pytest.raises(AgentError, match="accepts at most 1 MiB"):
            AgentClient(agent.url).measure(tiny_onnx + bytes(2**20), LatencyTarget(**FAST))
        assert _healthy(agent.url)
    finally:
        agent.stop()


@pytest.mark.parametrize(
    ("payload", "status", "says"),
    [
        (b"GARBAGE\r\n\r\n", 400, "Bad"),
        (b"\x00\xff\xfe nonsense \r\n\r\n", 400, "Bad"),
        (b"PUT /measure HTTP/1.1\r\nHost: x\r\n\r\n", 501, "Unsupported method"),
        (b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 404, "no /etc/passwd"),
        (b"POST /measure HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"),
        (b"POST /measure HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\ngarbage", 400, "not a model"),
        (b"POST /measure HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "refused"),
        (b"POST /measure HTTP/1.1\r\nX-Blocknas-Protocol: [1]\r\nContent-Length: 1\r\n\r\nx", 400, "JSON object"),
        (
            b'POST /measure HTTP/1.1\r\nX-Blocknas-Protocol: {"threads": 1e9}\r\nContent-Length: 1\r\n\r\nx',
            400,
            "integer",
        ),
        (b'POST /measure HTTP/1.1\r\nX-Blocknas-Protocol: {"evil": 1}\r\nContent-Length: 1\r\n\r\nx', 400, "unknown"),
    ],
)
def test_garbage_is_answered_with_a_json_error_and_the_agent_stays_up(
    agent: Agent, payload: bytes, status: int, says: str
) -> None:
    got, answer = _raw(agent.url, payload)
    assert (got, answer["ok"]) == (status, False) and says in str(answer["error"])
    assert _healthy(agent.url)


def test_a_wrong_or_missing_token_is_refused_on_every_request(tmp_path: Path, tiny_onnx: bytes) -> None:
    agent = start_agent(tmp_path, "--token-env", "AGENT_TOKEN")
    try:
        assert "token required" in agent.announced
        for token in (None, "wrong-token-0123456789", TOKEN[:-1]):
            client = AgentClient(agent.url, token=token)
            with pytest.raises(AgentError, match="refused the token"):
                client.health()
            with pytest.raises(AgentError, match="refused the token"):
                client.measure(tiny_onnx, LatencyTarget(**FAST))
        assert AgentClient(agent.url, token=TOKEN).measure(tiny_onnx, LatencyTarget(**FAST)).summary["p50_ms"] > 0
    finally:
        agent.stop()


def test_one_measurement_at_a_time(agent: Agent, tiny_onnx: bytes) -> None:
    """Three clients at once: the agent's measuring spans (its own clock) never overlap."""
    protocol = json.dumps({"time_cap_s": 0.2, "min_time_s": 0.2, "min_repeats": 3, "warmup": 1})
    together = threading.Barrier(3)

    def measure(_: int) -> tuple[float, float]:
        together.wait()
        status, answer = _post(agent.url, tiny_onnx, {"X-Blocknas-Protocol": protocol})
        assert status == 200
        return answer["started_s"], answer["started_s"] + answer["seconds"]

    with ThreadPoolExecutor(3) as pool:
        spans = sorted(pool.map(measure, range(3)))
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["latency-agent", "--host", "0.0.0.0"], "--allow-remote"),
        (["latency-agent", "--host", "192.0.2.1", "--allow-remote"], "needs a shared token"),
        (["latency-agent", "--token-env", "BLOCKNAS_TEST_UNSET_TOKEN"], "unset or shorter"),
        (["latency-agent", "--port", "70000"], "is not a port"),
        (["latency-agent", "--max-model-mib", "0"], "outside"),
        (["latency", "agent-script", "--out", "no/such/folder/agent.pyz"], "cannot write"),
    ],
)
def test_bad_agent_flags_are_one_paragraph_and_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str], bare_tmp_dir: Path
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_agent_refuses_a_port_in_use(agent: Agent, capsys: pytest.CaptureFixture[str]) -> None:
    port = agent.url.rsplit(":", 1)[1]
    assert main(["latency-agent", "--port", port]) == 2
    assert "cannot listen" in capsys.readouterr().err


def test_the_single_file_agent_needs_neither_torch_nor_scipy(tmp_path: Path) -> None:
    script = write_agent_zipapp(tmp_path / "agent.pyz")
    out = subprocess.run(
        [sys.executable, "-c", TORCH_FREE.format(str(script)), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--token-env" in out.stdout
    assert torch is not None  # this process has torch; the agent's did not
