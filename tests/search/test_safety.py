"""Nothing a run does can destroy a study or a user's files.

A torn journal record is repaired, not appended to; an export removes only what it wrote;
names, YAML and numbers that could reach outside a folder, blow up or mean nothing are
config errors.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import optuna
import pytest
import timm
import torch
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import TrialState
from PIL import Image

from blocknas.blocks import ArchConfig, ConfigError, arch_of, registered_archs, resolve_arch
from blocknas.search.cli import main
from blocknas.search.files import check_safe_name
from blocknas.search.study import ARCH_ATTR, BASELINE_ATTR, StudyConfig, export_front, load_study_config
from blocknas.search.tracking import PARENT_RUN_ATTR, open_storage, repair_torn_tail
from blocknas.search.training import FullTrainConfig
from blocknas.spaces import SearchSpace
from tests.conftest import REPO_ROOT

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDIES = {"first": 3, "second": 2}


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def _complete(storage: optuna.storages.BaseStorage) -> dict[str, dict[int, tuple[dict, list[float] | None]]]:
    """Study → trial number → (params, values) of its complete trials."""
    found = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        found[summary.study_name] = {
            t.number: (t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))
        }
    return found


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real journal: two studies with a few trials each, the last record a trial's completion."""
    path = tmp_path_factory.mktemp("journal") / "optuna.journal"
    storage = open_storage(str(path))
    for name, n_trials in STUDIES.items():
        optuna.create_study(study_name=name, storage=storage).optimize(_objective, n_trials=n_trials)
    return path


def test_every_torn_last_record_is_repaired_and_the_journal_stays_usable(journal: Path, tmp_path: Path) -> None:
    data = journal.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    head, last = data[:start], data[start:]
    assert 50 < len(last) < 400  # a sweep over every byte of a small record
    before = _complete(open_storage(str(journal)))
    torn_trial = max(before["second"])  # the trial the last record completes
    for cut in range(len(last)):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        path = folder / "optuna.journal"
        path.write_bytes(head + last[:cut])
        storage = open_storage(str(path))
        loaded = _complete(storage)
        assert loaded["first"] == before["first"], cut
        assert {n: v for n, v in loaded["second"].items() if n != torn_trial} == {
            n: v for n, v in before["second"].items() if n != torn_trial
        }, cut
        optuna.load_study(study_name="second", storage=storage).optimize(_objective, n_trials=1)
        reopened = _complete(open_storage(str(path)))  # a JSONDecodeError here is a corrupted journal
        assert len(reopened["second"]) == len(loaded["second"]) + 1, cut
        copies = list(folder.glob("optuna.journal.torn-*"))
        assert [c.read_bytes() for c in copies] == ([last[:cut]] if cut else []), cut


def test_a_record_torn_while_the_storage_is_open_is_not_appended_to(journal: Path, tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    path.write_bytes(journal.read_bytes())
    storage = open_storage(str(path))
    study = optuna.load_study(study_name="first", storage=storage)
    with open(path, "ab") as f:  # another worker killed in the middle of its write
        f.write(b'{"op_code":5,"worker_id":"dead-')
    study.optimize(_objective, n_trials=1)
    assert len(_complete(open_storage(str(path)))["first"]) == STUDIES["first"] + 1


def test_repair_waits_for_the_journal_lock_and_warns(
    journal: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "optuna.journal"
    torn = journal.read_bytes() + b'{"op_code":'
    path.write_bytes(torn)
    lock = JournalFileSymlinkLock(str(path))  # what Optuna's JournalFileBackend takes around a write
    lock.acquire()
    with caplog.at_level(logging.WARNING):
        repair = threading.Thread(target=repair_torn_tail, args=(path,))
        repair.start()
        time.sleep(0.3)
        assert path.read_bytes() == torn  # the write in progress is left alone
        lock.release()
        repair.join(timeout=10)
    assert path.read_bytes() == journal.read_bytes()
    assert "torn record" in caplog.text and "optuna.journal.torn-" in caplog.text


def test_a_last_line_that_is_not_json_is_removed(journal: Path, tmp_path: Path) -> None:
    path = tmp_path / "optuna.journal"
    path.write_bytes(journal.read_bytes() + b"\x00\x00\x00\n")  # zeroed blocks after a crash
    assert repair_torn_tail(path) is not None
    assert path.read_bytes() == journal.read_bytes()
    assert repair_torn_tail(path) is None


UNSAFE_NAMES = ["..", ".", "a/b", "a\\b", "a\x00", ""]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_names_are_config_errors(name: str) -> None:
    with pytest.raises(ConfigError, match=r"name: .*a name becomes a folder"):
        check_safe_name(name)
    with pytest.raises(ConfigError, match=r"^name: "):
        StudyConfig.from_dict({"name": name, "space": "tiny"})
    with pytest.raises(ConfigError, match=r"^name: "):
        FullTrainConfig.from_dict({"name": name})


@pytest.mark.parametrize("name", UNSAFE_NAMES)
@pytest.mark.parametrize(
    "command", [["search", "--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--n-trials", "1"], ["report"]]
)
def test_cli_refuses_unsafe_study_names(
    command: list[str], name: str, in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = in_tmp_dir / "runs" / "optuna.journal"
    if name:  # a study of that name exists, so only the name check stops the command
        optuna.create_study(study_name=name, storage=open_storage(str(journal)))
    written = sorted(in_tmp_dir.rglob("*"))
    assert main([*command, "--study-name", name]) == 2
    assert "error:" in capsys.readouterr().err
    assert sorted(in_tmp_dir.rglob("*")) == written  # nothing written, inside or (through '..') outside


def _front_study(*points: tuple[float, float]) -> optuna.Study:
    """A two-objective study whose complete trials have ``(accuracy, latency_ms)`` = ``points``."""
    study = optuna.create_study(study_name="s", directions=["maximize", "minimize"])
    for i, (accuracy, latency) in enumerate(points):
        arch = arch_of(registered_archs()[i % len(registered_archs())])
        user_attrs = {ARCH_ATTR: arch.to_dict(), "latency_ms": latency}
        study.add_trial(optuna.trial.create_trial(values=[accuracy, latency], user_attrs=user_attrs))
    return study


def test_export_removes_only_its_own_files(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    mine = {"tuned_by_hand.yaml": "stages: []\n", "t9999_mine.yaml": "kept\n", "notes.md": "mine\n"}
    for name, text in mine.items():
        (folder / name).write_text(text)
    study = _front_study((0.9, 2.0), (0.8, 1.0))
    first = export_front(study, tmp_path)
    assert len(first) == 2
    study.add_trial(  # dominates both: they leave the front and their files are removed
        optuna.trial.create_trial(values=[0.95, 0.5], user_attrs=study.trials[0].user_attrs)
    )
    second = export_front(study, tmp_path)
    assert [p.name[:6] for p in second] == ["t0002_"]
    assert not any(p.exists() for p in first)
    assert {n: (folder / n).read_text() for n in mine} == mine  # the user's files survive both exports
    assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
        *mine,
        second[0].name,
        "front.md",
        "front.csv",
    }


def test_a_kill_mid_export_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = _front_study((0.9, 2.0), (0.8, 1.0))
    before = {p.name: p.read_bytes() for p in export_front(study, tmp_path)}
    real_write_text = Path.write_text
    writes = []

    def killed_midway(self: Path, text: str, *args: object, **kwargs: object) -> int:
        writes.append(self)
        if len(writes) == 3:  # the second architecture file, half written
            real_write_text(self, text[: len(text) // 2])
            raise KeyboardInterrupt
        return real_write_text(self, text)

    monkeypatch.setattr(Path, "write_text", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        export_front(study, tmp_path)
    monkeypatch.undo()
    folder = tmp_path / "s"
    assert {p.name: p.read_bytes() for p in folder.glob("t*.yaml")} == before  # the old versions, whole
    assert all(w.parent == folder and w.name.startswith(".") for w in writes)  # only temporary files written
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


BILLION_LAUGHS = "\n".join(
    ["name: laughs", "stages: [{block: standard, out_chs: 8}]", "meta:", '  a0: &a0 ["lol", "lol", "lol", "lol"]']
    + [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
)


def test_yaml_alias_expansion_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1200  # ~9**9 strings once expanded
    with pytest.raises(ConfigError, match=r"laughs\.yaml: its aliases expand to more than 10,000 values"):
        ArchConfig.from_yaml(path)


def test_yaml_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    """The shipped mobile32 space reuses one block list with an anchor; a user's file may too."""
    path = tmp_path / "reuse.yaml"
    path.write_text("stages:\n  - &s {block: standard, out_chs: 8}\n  - *s\n")
    assert [stage.out_chs for stage in ArchConfig.from_yaml(path).stages] == [8, 8]
    assert SearchSpace.load("mobile32").size() > 1


@pytest.mark.parametrize(
    "data",
    [
        {"stages": [{"block": "standard", "out_chs": "8" * 384}]},
        {"stages": [{"block": "standard", "out_chs": 8}], "act_layer": 7 * ["x" * 50]},
        {"stages": [{"block": "standard", "out_chs": 8}], "x" * 384: 1},
    ],
)
def test_errors_show_a_bounded_excerpt_of_a_bad_value(data: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        ArchConfig.from_dict(data)
    assert len(str(caught.value)) < 300, str(caught.value)
    assert "…" in str(caught.value)


def test_arch_refuses_a_file_that_is_not_yaml_without_echoing_it(tmp_path: Path) -> None:
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    for path in ("/etc/passwd", str(secret)):
        with pytest.raises(ConfigError) as caught:
            timm.create_model("blocknet", arch=path)
        message = str(caught.value)
        assert path in message and ".yaml/.yml file" in message and "runs:/" in message
        assert "root:" not in message and len(message) < 400
    good = tmp_path / "arch.yml"
    good.write_text(yaml.safe_dump(arch_of("blocknet_mobile").to_dict()))
    assert resolve_arch(good) == resolve_arch(str(good)) == arch_of("blocknet_mobile")


@pytest.mark.parametrize(("key", "text"), [("timeout_s", ".nan"), ("timeout_s", "-.inf"), ("train.lr", ".inf")])
def test_non_finite_numbers_are_config_errors(key: str, text: str, tmp_path: Path) -> None:
    section, _, leaf = key.rpartition(".")
    value = {leaf: yaml.safe_load(text)}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "space": "tiny", **({section: value} if section else value)}))
    with pytest.raises(ConfigError, match=rf"study\.yaml: {key}: .* is not a finite number"):
        load_study_config(path)


# -- a signal during an import ---------------------------------------------------------------

SLOW_MODULE = """
import os, signal, time
os.kill(os.getpid(), signal.SIGTERM)  # the handler runs between the next two bytecodes
end = time.monotonic() + 0.3
while time.monotonic() < end:
    pass
FINISHED = True
"""


def test_a_signal_inside_an_import_is_delivered_after_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import sys

    from blocknas.search.interrupts import install_interrupt_handlers, interrupt_pending

    (tmp_path / "blocknas_slow_import.py").write_text(SLOW_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "blocknas_slow_import", raising=False)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install_interrupt_handlers()
    try:
        with pytest.raises(KeyboardInterrupt):
            import blocknas_slow_import  # noqa: F401

            for _ in range(1000):  # the interrupt surfaces at the first call back in ordinary code
                len([])
        assert sys.modules["blocknas_slow_import"].FINISHED  # the module ran to its end, nothing half imported
        assert not interrupt_pending()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.modules.pop("blocknas_slow_import", None)


# -- input data --------------------------------------------------------------------------------


def _gradient(dtype: type, top: float) -> np.ndarray:
    """A 16×16 horizontal ramp from 0 to ``top``."""
    return np.tile(np.linspace(0.0, top, 16), (16, 1)).astype(dtype)


def _write_folder(root: Path, images: dict[str, list[Image.Image]], suffix: str) -> None:
    for name, items in images.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(items):
            image.save(root / name / f"{i}{suffix}")


@pytest.mark.parametrize(
    ("array", "suffix"),
    [
        (_gradient(np.uint16, 65535), ".png"),  # PIL mode I;16
        (_gradient(np.uint16, 65535), ".tif"),
        (_gradient(np.int32, 2**31 - 1), ".tif"),  # mode I
        (_gradient(np.float32, 1.0), ".tif"),  # mode F
    ],
    ids=["png16", "tif16", "tif32int", "tif32float"],
)
def test_high_bit_depth_images_keep_their_contrast(array: np.ndarray, suffix: str, tmp_path: Path) -> None:
    from blocknas.search.data.sources import read_image_folder

    _write_folder(tmp_path, {c: [Image.fromarray(array)] for c in ("a", "b")}, suffix)
    raw = read_image_folder(str(tmp_path), input_size=(16, 16), in_chans=1, workers=1)
    ramp = raw.x_train[0, 0, 0]
    assert float(ramp[0]) < 0.05 and float(ramp[-1]) > 0.95  # not all white or all black
    assert torch.allclose(ramp, torch.linspace(0, 1, 16), atol=0.07)


def test_a_float_image_outside_0_1_is_clipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from blocknas.search.data.sources import read_image_folder

    _write_folder(tmp_path, {c: [Image.fromarray(_gradient(np.float32, 4.0))] for c in ("a", "b")}, ".tif")
    with caplog.at_level(logging.WARNING):
        raw = read_image_folder(str(tmp_path), input_size=(16, 16), in_chans=1, workers=1)
    assert "outside [0, 1]" in caplog.text
    assert float(raw.x_train.max()) == 1.0


def test_a_one_class_dataset_is_an_error(tmp_path: Path) -> None:
    from blocknas.search.data import DataConfig, DataError, load_data

    _write_folder(tmp_path, {"only": [Image.new("L", (8, 8), v) for v in range(0, 250, 25)]}, ".png")
    with pytest.raises(DataError, match=r"1 class \(only\).*at least 2"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)), input_size=(8, 8), in_chans=1)


def test_a_validation_split_missing_a_class_is_an_error(tmp_path: Path) -> None:
    from blocknas.search.data import DataConfig, DataError, load_data

    images = {c: [Image.new("L", (8, 8), v) for v in range(0, 250, 50)] for c in ("cat", "dog")}
    _write_folder(tmp_path / "train", images, ".png")
    _write_folder(tmp_path / "val", {"cat": images["cat"]}, ".png")
    (tmp_path / "val" / "dog").mkdir()
    with pytest.raises(DataError, match=r"validation split has no images of class 'dog'"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)), input_size=(8, 8), in_chans=1)


# -- an MLflow server behind a local proxy: basic auth, slow parent runs -------------------------


class _Proxy(ThreadingHTTPServer):
    """A proxy on 127.0.0.1 in front of an MLflow server that can require basic auth (and strips it)
    and hold back the creation of a study's parent run (until ``parent_gate`` is set, then for
    ``parent_delay_s``), every answer for ``answer_delay_s``."""

    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        *,
        credentials: str | None = None,
        parent_delay_s: float = 0.0,
        parent_gate: threading.Event | None = None,
        answer_delay_s: float = 0.0,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.credentials, self.parent_delay_s, self.answer_delay_s = credentials, parent_delay_s, answer_delay_s
        self.parent_gate = parent_gate
        self.parent_creates = 0  # parent-run creations received (before the delay)
        self.parent_created = 0  # ... and forwarded to the server (after it)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        time.sleep(self.server.answer_delay_s)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        wanted = self.server.credentials
        if wanted and self.headers.get("Authorization") != "Basic " + base64.b64encode(wanted.encode()).decode():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        parent = self.path.endswith("/runs/create") and {"key": "blocknas.role", "value": "study"} in json.loads(
            body or b"{}"
        ).get("tags", [])
        if parent:
            self.server.parent_creates += 1
            if self.server.parent_gate is not None:
                self.server.parent_gate.wait(timeout=180)
            time.sleep(self.server.parent_delay_s)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host", "connection")}
        upstream = http.client.HTTPConnection(self.server.upstream.netloc, timeout=60)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.server.parent_created += parent
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client may be gone (killed)
            self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward


def test_the_health_check_uses_mlflows_own_credentials(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from blocknas.search.tracking import TrackingError, check_reachable

    proxy = _Proxy(mlflow_server, credentials="alice:s3cret")
    try:
        host = proxy.url.removeprefix("http://")
        check_reachable(f"http://alice:s3cret@{host}")  # basic auth in the URL
        with pytest.raises(TrackingError, match="is not reachable"):
            check_reachable(f"http://alice:wrong@{host}")
        with pytest.raises(TrackingError, match="is not reachable"):
            check_reachable(proxy.url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
        check_reachable(proxy.url)  # MLflow's credential variables
        assert MlflowClient(proxy.url).search_experiments(max_results=1)  # what MLflow itself reaches
    finally:
        proxy.shutdown()


def test_a_server_slow_to_answer_is_waited_for_and_a_closed_port_fails_at_once(mlflow_server: str) -> None:
    """Connecting decides reachability; the answer may take longer (a server starting up or busy
    with many workers used to fail a worker with exit 2 after a 5-s limit on the whole request)."""
    from blocknas.search.tracking import TrackingError, check_reachable
    from blocknas.search.tracking.dashboard import free_port

    proxy = _Proxy(mlflow_server, answer_delay_s=2.5)
    try:
        start = time.monotonic()
        check_reachable(proxy.url, timeout_s=1)
        assert time.monotonic() - start >= 2.5
    finally:
        proxy.shutdown()
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"is not reachable: .*[Cc]onnection refused"):
        check_reachable(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    assert time.monotonic() - start < 10  # refused at once, not after the 60 s an answer may take


# -- validation before any write ---------------------------------------------------------------


@pytest.mark.services
def test_a_storage_error_is_reported_before_anything_is_created(
    bare_tmp_dir: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = bare_tmp_dir / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            {"name": "tiny", "space": "tiny", "data": {"name": "digits"}, "train": {"epochs": 1}, "n_trials": 1}
        )
    )
    storage = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    assert main(["search", "--storage", storage, "--config", str(config), "--no-progress"]) == 2
    assert "no_such_db" in capsys.readouterr().err
    assert not (bare_tmp_dir / "runs").exists()  # no mlflow.db, no experiment, no folder


# -- study set-up: once, by whichever worker finds it undone -----------------------------------


def _setup_config(folder: Path, name: str, *, n_trials: int = 2) -> Path:
    """A tiny search (the first trial a baseline) on a journal storage in ``folder``."""
    stages = [{"block": "standard", "out_chs": 8, "stride": 2}]
    arch = ArchConfig.from_dict({"stages": stages, "in_chans": 1, "input_size": [16, 16], "num_classes": 10})
    arch.to_yaml(folder / "plain.yaml")
    config = {
        "name": name,
        "space": "tiny",
        "data": {"name": "digits", "max_train_samples": 256},
        "train": {"epochs": 1, "batch_size": 128},
        "latency": {"time_cap_s": 0.1, "min_repeats": 5, "warmup": 2},
        "n_trials": n_trials,
        "sampler": "random",
        "baselines": [str(folder / "plain.yaml")],
        "storage": str(folder / "optuna.journal"),
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _worker(config: Path, tracking_uri: str, log: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BLOCKNAS_THREADS": "1", **env_vars}
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config), "--no-progress"]
    with log.open("w") as out:
        return subprocess.Popen(
            [*command, "--tracking-uri", tracking_uri], cwd=config.parent, env=env, stdout=out, stderr=out
        )


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"
        time.sleep(0.1)


def _parents(server: str, name: str) -> list:
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    return client.search_runs([experiment.experiment_id], "tags.`blocknas.role` = 'study'")


def test_a_slow_parent_run_is_created_once(mlflow_server: str, tmp_path: Path) -> None:
    """The parent run is created only once the other worker waits for it, and 3 s later: past the
    set-up wait limit (1 s here). The worker holding the claim is alive on this host, so the other
    waits however long it takes (it once gave up after a fixed 30 s and created a second parent)."""
    gate = threading.Event()
    proxy = _Proxy(mlflow_server, parent_gate=gate, parent_delay_s=3)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    try:
        config = _setup_config(tmp_path, "slow-parent", n_trials=1)
        workers = [_worker(config, proxy.url, log, BLOCKNAS_SETUP_WAIT_S="1") for log in logs]
        _wait_until(
            lambda: any("waiting for worker" in log.read_text() for log in logs if log.exists()),
            150,
            "a waiting worker",
        )
        gate.set()
        for worker, log in zip(workers, logs):
            assert worker.wait(timeout=150) == 0, log.read_text()[-3000:]
    finally:
        gate.set()  # a held request goes on, so a failed test leaves no worker stuck on it
        proxy.shutdown()
    assert sum("waiting for worker" in log.read_text() for log in logs) == 1, "one worker waited for the other"
    parents = _parents(mlflow_server, "slow-parent")
    assert proxy.parent_creates == 1 and len(parents) == 1
    study = optuna.load_study(study_name="slow-parent", storage=open_storage(str(tmp_path / "optuna.journal")))
    assert study.user_attrs[PARENT_RUN_ATTR] == parents[0].info.run_id
    assert [t.state for t in study.trials] == [TrialState.COMPLETE]


def test_a_worker_killed_during_set_up_is_taken_over(mlflow_server: str, tmp_path: Path) -> None:
    proxy = _Proxy(mlflow_server, parent_delay_s=4)
    try:
        config = _setup_config(tmp_path, "early-kill")
        first = _worker(config, proxy.url, tmp_path / "first.log")
        _wait_until(lambda: proxy.parent_creates == 1 or first.poll() is not None, 60, "the parent-run request")
        first.kill()  # after creating the study, before storing the parent's id
        first.wait(timeout=10)
        _wait_until(lambda: proxy.parent_created == 1, 10, "the dead worker's parent run")  # created, never stored
        second = _worker(config, proxy.url, tmp_path / "second.log")
        assert second.wait(timeout=120) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        proxy.shutdown()
    study = optuna.load_study(study_name="early-kill", storage=open_storage(str(tmp_path / "optuna.journal")))
    parents = _parents(mlflow_server, "early-kill")
    assert [p.info.run_id for p in parents] == [study.user_attrs[PARENT_RUN_ATTR]]  # the orphan, reused
    assert [t.user_attrs.get(BASELINE_ATTR) for t in study.trials[:1]] == ["plain"]  # enqueued by the second
    assert study.trials[0].state == TrialState.COMPLETE
    artifacts = [a.path for a in MlflowClient(mlflow_server).list_artifacts(parents[0].info.run_id)]
    assert "study.yaml" in artifacts
    assert parents[0].data.params  # the study's params, logged once
    # no wait on the dead worker's claim (it would last $BLOCKNAS_SETUP_WAIT_S, 30 min, past the 120 s above)
    assert "died setting up study early-kill; taking over" in (tmp_path / "second.log").read_text()


def test_a_set_up_claimed_on_another_host_is_waited_for_up_to_a_bound(tmp_path: Path) -> None:
    from blocknas.search.tracking import SETUP_COMPLETE_ATTR, StorageError, complete_setup
    from blocknas.search.tracking.claims import CLAIM_OWNER_ATTR, claim_name

    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    claim = optuna.create_study(study_name=claim_name("s", 0), storage=storage)
    claim.set_user_attr(CLAIM_OWNER_ATTR, "some-other-host:123")  # its liveness cannot be seen from here
    steps: list[str] = []
    with pytest.raises(StorageError, match=r"being set up by worker some-other-host:123 .*optuna delete-study"):
        complete_setup(study, storage, lambda: steps.append("ran"), wait_s=0.3, poll_s=0.1)
    assert not steps
    optuna.delete_study(study_name=claim_name("s", 0), storage=storage)  # what the message says to do
    assert complete_setup(study, storage, lambda: steps.append("ran"), wait_s=0.3, poll_s=0.1)
    assert complete_setup(study, storage, lambda: steps.append("ran")) is False  # complete: nothing to do
    assert steps == ["ran"] and study.user_attrs[SETUP_COMPLETE_ATTR] is True
    assert [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)] == ["s"]


def test_claims_left_by_a_worker_killed_after_set_up_are_deleted_by_the_next(tmp_path: Path) -> None:
    """Killed between marking set-up complete and deleting its claims, a worker leaves them in the storage."""
    from blocknas.search.tracking import SETUP_COMPLETE_ATTR, complete_setup
    from blocknas.search.tracking.claims import CLAIM_OWNER_ATTR, claim_name

    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="s", storage=storage)
    optuna.create_study(study_name="other", storage=storage)
    optuna.create_study(study_name=claim_name("other", 0), storage=storage)  # another study's, still needed
    for generation in (1, 2):  # claim 0 deleted, 1 and 2 not: the release loop was cut short
        claim = optuna.create_study(study_name=claim_name("s", generation), storage=storage)
        claim.set_user_attr(CLAIM_OWNER_ATTR, "some-other-host:123")
    study.set_user_attr(SETUP_COMPLETE_ATTR, True)
    assert complete_setup(study, storage, lambda: pytest.fail("set-up is complete")) is False
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    assert names == ["other", claim_name("other", 0), "s"]


def test_a_figure_being_uploaded_is_never_rewritten_under_its_reader(tmp_path: Path) -> None:
    """Two workers finishing a study at once both write ``pareto.png``; one may be uploading it meanwhile."""
    from blocknas.search.figures import pyplot, save_figure

    def figure(points: int) -> object:
        fig, ax = pyplot().subplots()
        ax.plot(range(points), range(points))
        return fig

    path = save_figure(figure(1000), tmp_path / "pareto.png")
    old = path.read_bytes()
    with path.open("rb") as upload:  # the other worker's upload, size taken at open
        save_figure(figure(2), path)
        assert upload.read() == old  # before: truncated and rewritten in place, the upload came up short
    assert path.read_bytes() != old and path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["pareto.png"]
