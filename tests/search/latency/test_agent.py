"""The latency agent as a real process: the single-file agent, started with torch and SciPy made unimportable,
pinned to one core, on 127.0.0.1; real ONNX Runtime measurements, real HTTP, garbage included."""

from __future__ import annotations

import http.client
import io
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

import optuna
import pytest
import timm
import torch
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from rich.console import Console

import blocknas.blocks  # noqa: F401 - registers the blocknet models
from blocknas.blocks import parse
from blocknas.search.cli import main
from blocknas.search.latency import (
    AgentClient,
    AgentError,
    AgentLost,
    LatencyTarget,
    check_agent,
    example_input,
    export_onnx,
    measure_latency,
    write_agent_zipapp,
)
from blocknas.search.markdown import md_text
from blocknas.search.report import print_search_summary, report_study
from blocknas.search.study import (
    FAIL_REASON_ATTR,
    FINGERPRINT_ATTR,
    LATENCY_DEVICE_ATTR,
    StudyConfig,
    run_search,
    trial_counts,
)
from blocknas.search.tracking import RUN_ID_ATTR, open_storage
from tests.conftest import quick_study

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
        (["latency", "calibrate", "--agent", "ftp://x:1", "--out", "t"], "write http://HOST:PORT"),
        (["latency", "calibrate", "--agent", "http://127.0.0.1:9", "--out", "t", "--networks", "0"], "--networks"),
        (["latency", "calibrate", "--agent", "http://127.0.0.1:9", "--out", "t", "--held-out", "1"], "--held-out"),
        (["latency", "calibrate", "--agent", "http://127.0.0.1:9", "--out", "t", "--space", "nope"], "nope"),
        (["latency", "calibrate", "--agent", "http://127.0.0.1:9", "--out", "t", "--space", "tiny"], "unreachable"),
        (["latency", "calibrate", "--agent", "http://127.0.0.1:9", "--out", "t", "--input-size", "0"], "--input-size"),
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


# -- searches measuring on the agent -----------------------------------------------------------


def study_config(name: str, latency: dict[str, object], **overrides: object) -> StudyConfig:
    """A quick tiny-space study (synthetic data, one epoch) whose latency target is ``latency``."""
    data = quick_study(name, **overrides)
    data["latency"] = {**data["latency"], **latency}
    return parse(StudyConfig, data)


def _lines_until(agent: Agent, text: str, count: int, timeout_s: float = 120.0) -> None:
    """Read the agent's log until ``text`` has appeared ``count`` times."""
    assert agent.process.stdout is not None
    seen, deadline = 0, time.monotonic() + timeout_s
    while seen < count and time.monotonic() < deadline:
        ready, _, _ = select.select([agent.process.stdout], [], [], 0.5)
        if ready:
            seen += text in agent.process.stdout.readline()
    assert seen == count, f"the agent logged {text!r} {seen} times, not {count}"


def test_a_search_on_the_agent_survives_the_agent_being_killed(tmp_path: Path, in_tmp_dir: Path) -> None:
    """A real search measures on the agent; killed mid-study, the trial fails and is retried: nothing lost."""
    agent = start_agent(tmp_path, "--token-env", "AGENT_TOKEN")
    latency = {"agent": agent.url, "token_env": "STUDY_AGENT_TOKEN", "agent_timeout_s": 10}
    config = study_config("killed", latency, n_trials=3)
    os.environ["STUDY_AGENT_TOKEN"] = TOKEN
    outcome: list[BaseException] = []

    def search() -> None:
        try:
            run_search(config, progress=False)
        except BaseException as exc:  # AgentLost is a KeyboardInterrupt
            outcome.append(exc)

    worker = threading.Thread(target=search)
    worker.start()
    _lines_until(agent, "POST /measure", 2)  # the check's reference network, then trial 0
    agent.stop()
    worker.join(timeout=300)
    assert outcome and isinstance(outcome[0], AgentLost), outcome
    assert "queued for retry" in str(outcome[0])

    study = optuna.load_study(study_name="killed", storage=open_storage(config.storage_url))
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs[FAIL_REASON_ATTR].startswith("AgentError")
    assert trial_counts(study) == (1, 0), "trial 0 counts; the failed trial does not (its retry is queued)"

    port = int(agent.url.rsplit(":", 1)[1])
    agent = start_agent(tmp_path, "--token-env", "AGENT_TOKEN", port=port)  # the device is back
    try:
        result = run_search(config, progress=False)
    finally:
        agent.stop()
        del os.environ["STUDY_AGENT_TOKEN"]
    trials = result.study.trials
    assert trial_counts(result.study) == (3, 0)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3, "nothing lost: 3 trained trials"
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == failed[0].number)
    assert retry.state == TrialState.COMPLETE and retry.params == failed[0].params
    client = MlflowClient(result.tracking_uri)
    statuses = {client.get_run(t.user_attrs[RUN_ID_ATTR]).info.status for t in trials if RUN_ID_ATTR in t.user_attrs}
    assert statuses <= {"FINISHED", "FAILED"}, "no run left RUNNING"
    device = result.study.user_attrs[LATENCY_DEVICE_ATTR]  # the study names the agent's device
    assert device["source"] == "agent" and device["where"] == agent.url and "torch" not in device["fingerprint"]
    assert client.get_run(result.parent_run_id).data.tags["latency.device.fingerprint_id"] == device["fingerprint_id"]
    for trial in (t for t in trials if t.state == TrialState.COMPLETE):
        assert trial.user_attrs[FINGERPRINT_ATTR] == device["fingerprint_id"], "every candidate measured there"
        tags = client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.tags
        seen = [
            (t.number, t.state.name, t.user_attrs.get(RUN_ID_ATTR), t.system_attrs.get("failed_trial")) for t in trials
        ]
        assert tags.get("latency.fp.cpu_model") == device["fingerprint"]["cpu_model"], (
            trial.number,
            seen,
            sorted(tags),
        )
        assert "latency.fp.torch" not in tags


def _never_answers() -> tuple[socket.socket, str]:
    """A listening socket that accepts connections (the kernel's backlog) and never answers: a stuck agent."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("problem", ["wrong token", "no token", "unreachable", "too slow"])
def test_an_unusable_agent_stops_the_search_before_anything_is_written(
    problem: str, tmp_path_factory: pytest.TempPathFactory, bare_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listener = agent = None
    latency: dict[str, object] = {"agent_timeout_s": 2}
    if problem in ("wrong token", "no token"):
        agent = start_agent(tmp_path_factory.mktemp("agent"), "--token-env", "AGENT_TOKEN")
        latency["agent"] = agent.url
        if problem == "wrong token":
            os.environ["STUDY_AGENT_TOKEN"] = "not-the-token-0123456789"
            latency["token_env"] = "STUDY_AGENT_TOKEN"
    elif problem == "unreachable":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            latency["agent"] = f"http://127.0.0.1:{probe.getsockname()[1]}"
    else:
        listener, latency["agent"] = _never_answers()
    config = quick_study("refused")
    config["latency"].update(latency)
    (bare_tmp_dir / "c.yaml").write_text(yaml.safe_dump(config))
    try:
        code = main(["search", "--config", "c.yaml", "--no-progress"])
    finally:
        os.environ.pop("STUDY_AGENT_TOKEN", None)
        if agent is not None:
            agent.stop()
        if listener is not None:
            listener.close()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    says = {"wrong token": "refused the token", "no token": "refused the token", "unreachable": "unreachable"}
    assert says.get(problem, "did not answer within 2 s") in err
    assert sorted(p.name for p in bare_tmp_dir.iterdir()) == ["c.yaml"], "nothing written"


# -- a table calibrated through the agent, used offline -----------------------------------------


def test_a_table_calibrated_through_the_agent_is_used_offline_with_its_device_and_accuracy(
    tmp_path: Path, in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = start_agent(tmp_path)
    (in_tmp_dir / "study.yaml").write_text(yaml.safe_dump(quick_study("offline", n_trials=3)))
    argv = ["latency", "calibrate", "--agent", agent.url, "--out", "tables", "--config", "study.yaml"]
    try:  # seed 0 draws the networks the study's random sampler (seed 0) proposes first: the table covers them
        assert main([*argv, "--networks", "6", "--held-out", "3"]) == 0
    finally:
        agent.stop()  # from here on nothing can be measured on the device
    out = capsys.readouterr().out
    (table_file,) = (in_tmp_dir / "tables").glob("*.json")
    stored = json.loads(table_file.read_text())
    assert table_file.stem == stored["fingerprint_id"] and "torch" not in stored["fingerprint"], "named by the device"
    (accuracy,) = stored["accuracy"].values()
    assert accuracy["n_held_out"] == 3 and 0 <= accuracy["within_10pct"] <= 1 and -1 <= accuracy["kendall_tau"] <= 1
    assert f"{accuracy['within_10pct']:.0%} of 3 networks within ±10 %" in out

    budget = 1e6  # every network fits: the point is where the numbers come from
    latency = {"mode": "predicted", "table": str(table_file)}
    config = study_config("offline", latency, n_trials=3, constraints={"latency_ms": budget})
    result = run_search(config, progress=False)
    device = result.study.user_attrs[LATENCY_DEVICE_ATTR]
    assert device["source"] == "table" and device["fingerprint_id"] == stored["fingerprint_id"]
    assert device["calibration"]["within_10pct"] == accuracy["within_10pct"], "the report can show the accuracy"
    client = MlflowClient(result.tracking_uri)
    for trial in result.study.trials:
        assert trial.state == TrialState.COMPLETE and trial.user_attrs[FINGERPRINT_ATTR] == device["fingerprint_id"]
        assert trial.constraints["latency_ms"] == trial.user_attrs["latency_ms"] - budget, "budgeted on the table"
        metrics = client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.metrics
        assert "latency_p50_ms" not in metrics, "nothing measured on this machine"

    named = f"{stored['fingerprint']['cpu_model']} (fingerprint {stored['fingerprint_id']}), predicted by the table"
    calibrated = f"{accuracy['within_10pct']:.0%} of 3 held-out networks within ±10 %"
    console = Console(file=io.StringIO(), width=300)
    print_search_summary(result, config, console)
    summary = console.file.getvalue()
    assert named in summary and calibrated in summary and f"budget latency_ms ≤ {budget:g} ms" in summary
    report = report_study("offline", storage_url=config.storage_url, tracking_uri=result.tracking_uri)
    markdown = report.markdown.read_text()
    assert md_text(named) in markdown and calibrated in markdown
