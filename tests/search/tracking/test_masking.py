"""Credentials never leave the process: every URL form is masked, and real runs are scanned for leaks.

The unit tests run ``mask_url`` over every storage and tracking URL form blocknas accepts. The
leak scans run real (tiny) searches, reports, doctors, an ablation and failing runs through the
CLI with a password in the URL, then grep everything they produced: stdout, stderr, log records,
the MLflow store (through ``MlflowClient`` and as raw bytes), the Optuna study's attributes, the
report and the exported front files.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from blocknas.search.cli import main
from blocknas.search.tracking import mask_config, mask_log_records, mask_url, masked_yaml, masking, open_storage
from tests.conftest import quick_run, quick_study, require_service


@pytest.fixture(autouse=True)
def forget_learned_secrets() -> Iterator[None]:
    """The secrets a test teaches ``mask_url`` stay with that test, not with whatever runs next in
    this process (a remembered ``long`` once hid the ``long`` of a JSON key in another test's run)."""
    learned = set(masking._seen)
    yield
    with masking._seen_lock:
        masking._seen.clear()
        masking._seen.update(learned)


# -- the masking function ---------------------------------------------------------------

SCHEMES = ["postgresql", "postgresql+psycopg", "mysql+pymysql", "redis", "rediss", "http", "https"]
# Characters SQLAlchemy, libpq or redis-py accept unencoded in a password, where urllib ends the host part.
SPECIAL = "#?/@ :"
PASSWORDS = [
    "Hunter2xyz",
    "p%40ss%2Fw0rd",  # percent-encoded ("p@ss/w0rd")
    *(f"Pa{c}ss0rd" for c in SPECIAL),
    "P@s/s#w?r d:'\"x",  # all of them at once, and quotes
]
FORMS = {
    "user and password": "{scheme}://alice:{pw}@db.example.org:5432/name",
    "password, no user": "{scheme}://:{pw}@db.example.org:6379/15",
    "query password=": "{scheme}://alice@db.example.org/name?sslmode=require&password={pw}",
    "query token=": "{scheme}://db.example.org/name?token={pw}&x=1",
    "query PWD=, mixed case": "{scheme}://db.example.org/name?PWD={pw}",
    "query api_key=": "{scheme}://db.example.org/name?api_key={pw}",
    "query sslpassword=, then accessToken=": "{scheme}://db.example.org/name?sslpassword={pw}&accessToken={pw}",
    "query access_token=, in the fragment": "{scheme}://db.example.org/name#access_token={pw}",
}


def _assert_masked(text: str, *secrets: str) -> None:
    for secret in secrets:
        for form in {secret, unquote(secret)}:
            assert form not in text, f"{form!r} leaked in {text!r}"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("password", PASSWORDS)
def test_mask_url_hides_the_password_of_every_form(scheme: str, form: str, password: str) -> None:
    url = FORMS[form].format(scheme=scheme, pw=password)
    masked = mask_url(url)
    _assert_masked(masked, password)
    assert "***" in masked
    assert masked.startswith(f"{scheme}://") and "db.example.org" in masked, "where it points stays readable"
    assert mask_url(masked) == masked


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgresql://alice:pw1234@h:5432/db", "postgresql://alice:***@h:5432/db"),
        ("redis://:pw1234@127.0.0.1:6379/15", "redis://:***@127.0.0.1:6379/15"),
        ("postgresql://u@h/db?sslmode=require&password=pw1234", "postgresql://u@h/db?sslmode=require&password=***"),
        ("postgresql://u:p@ss:w@[::1]:5432/db", "postgresql://u:***@[::1]:5432/db"),
    ],
)
def test_mask_url_keeps_everything_but_the_secret(url: str, expected: str) -> None:
    assert mask_url(url) == expected


@pytest.mark.parametrize(
    "text",
    [
        "runs/optuna.journal",
        "journal:runs/optuna.journal",
        "sqlite:///runs/optuna.db",
        "sqlite:////abs/path/mlflow.db",
        "postgresql://postgres@127.0.0.1:5432/test",
        "redis://127.0.0.1:6379/0",
        "http://127.0.0.1:5000",
        "postgresql://u@h/db?sslmode=require&keepalives=1",
        "https://api.example.org/v1?max_tokens=5&tokenizer=bpe&keyboard=us",
        "no URL here: a plain sentence",
        "",
    ],
)
def test_text_without_credentials_is_unchanged(text: str) -> None:
    assert mask_url(text) == text


def test_urls_inside_free_text_and_secrets_seen_before_are_masked() -> None:
    text = "could not connect to 'postgresql://u:Zq9secretA@h/db' (redis://:Zq9secretB@h:6379/0 too)"
    masked = mask_url(text)
    assert masked == "could not connect to 'postgresql://u:***@h/db' (redis://:***@h:6379/0 too)"
    # A driver repeating a password it was given, out of any URL, is masked from then on.
    assert mask_url('FATAL: password "Zq9secretA" rejected') == 'FATAL: password "***" rejected'


def test_percent_decoded_password_is_masked_in_later_text() -> None:
    mask_url("mysql+pymysql://u:Qx%2F7%40long@h/db")
    assert mask_url("access denied for password Qx/7@long") == "access denied for password ***"


def test_a_remembered_secret_leaves_the_same_letters_inside_other_words_alone() -> None:
    mask_url("mysql+pymysql://u:Qx%2F7%40long@h/db")  # remembers the pieces a driver may show: "long" among them
    document = json.dumps({"longer": {"epochs": 2}, "block": "standard", "note": "headlong"})
    assert json.loads(mask_url(document)) == {"longer": {"epochs": 2}, "block": "standard", "note": "headlong"}
    assert mask_url('host "long" and password=long&x') == 'host "***" and password=***&x'


@pytest.mark.parametrize("variable", ["MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"])
def test_mlflow_credentials_from_the_environment_are_masked(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "EnvSecret-77")
    assert mask_url("https://mlflow.example.org/?t=EnvSecret-77 and EnvSecret-77") == (
        "https://mlflow.example.org/?t=*** and ***"
    )
    assert mask_config({"a": ["EnvSecret-77"]}) == {"a": ["***"]}


def test_config_and_its_yaml_are_masked_at_every_depth() -> None:
    config = {
        "name": "s",
        "storage": "postgresql://u:Cfg-secret1@h/db",
        "tracking_uri": "http://u:Cfg-secret2@h:5000",
        "nested": {"urls": ["redis://:Cfg-secret3@h:6379/0", 3], "api_token": "Cfg-secret4"},
        "epochs": 2,
    }
    masked = mask_config(config)
    assert masked["epochs"] == 2 and masked["name"] == "s"
    assert masked["nested"]["urls"] == ["redis://:***@h:6379/0", 3]
    assert masked["nested"]["api_token"] == "***"
    text = masked_yaml(config)
    _assert_masked(text, "Cfg-secret1", "Cfg-secret2", "Cfg-secret3", "Cfg-secret4")
    assert yaml.safe_load(text) == masked
    assert config["storage"] == "postgresql://u:Cfg-secret1@h/db", "the input is not changed"


def test_log_records_are_masked_once_formatted(caplog: pytest.LogCaptureFixture) -> None:
    mask_log_records()
    logging.getLogger("some.driver").warning("connecting to %s", "postgresql://u:LogLeak12@h/db")
    assert caplog.records[-1].getMessage() == "connecting to postgresql://u:***@h/db"


# -- leak scans over real runs ---------------------------------------------------------


@pytest.fixture
def study_yaml(in_tmp_dir: Path) -> Path:
    """A one-trial, one-epoch study on synthetic 16×16 data, unique per test (it may land in PostgreSQL)."""
    path = in_tmp_dir / "leak.yaml"
    path.write_text(yaml.safe_dump(quick_study(f"leak-{uuid.uuid4().hex[:8]}")))
    return path


class Scan:
    """Runs CLI commands and collects everything they showed a person or wrote to a store."""

    def __init__(self, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, root: Path) -> None:
        self.capsys, self.caplog, self.root = capsys, caplog, root
        self.texts: list[str] = []

    def run(self, *argv: str) -> tuple[int, str]:
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        self.texts += [out, err]
        return code, err

    def add_study(self, name: str, storage: str) -> list[optuna.trial.FrozenTrial]:
        """The Optuna study's attributes (they live in the storage, which people read too); its trials."""
        opened = open_storage(storage)
        (study,) = [s for s in opened.get_all_studies() if s.study_name == name]
        self.texts.append(repr((study.user_attrs, study.system_attrs)))
        trials = optuna.load_study(study_name=name, storage=opened).trials
        self.texts += [repr((t.params, t.user_attrs, t.system_attrs)) for t in trials]
        return trials

    def add_mlflow(self, tracking_uri: str) -> None:
        client = MlflowClient(tracking_uri)
        for experiment in client.search_experiments():
            self.texts.append(repr(experiment))
            for run in client.search_runs([experiment.experiment_id], max_results=1000):
                self.texts.append(repr((run.data.params, run.data.tags, run.info)))

    def leaks(self, *secrets: str) -> list[str]:
        records = [f"{r.name}: {r.getMessage()}" for r in self.caplog.records]
        found = []
        for secret in {form for s in secrets for form in (s, unquote(s))}:
            found += [
                f"output/log/store text: ...{t[max(0, t.find(secret) - 80) :][:200]}"
                for t in [*self.texts, *records]
                if secret in t
            ]
            found += [str(p) for p in self.root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        return found


@pytest.fixture
def scan(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, in_tmp_dir: Path) -> Iterator[Scan]:
    caplog.set_level(logging.DEBUG)
    yield Scan(capsys, caplog, in_tmp_dir)


def _delete_study(name: str, storage: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        pass


PG = "127.0.0.1:5432"
STORAGE_FORMS = {  # (service, storage URL, its password): the servers accept any password
    "PostgreSQL, user and percent-encoded password": (
        ("PostgreSQL", 5432),
        f"postgresql://postgres:Pg%40Leak%2F91@{PG}/test",
        "Pg%40Leak%2F91",
    ),
    "PostgreSQL, libpq query password=": (
        ("PostgreSQL", 5432),
        f"postgresql+psycopg://postgres@{PG}/test?password=PgQueryLeak92",
        "PgQueryLeak92",
    ),
    "Redis, password and no user": (("Redis", 6379), "redis://:RedisLeak97@127.0.0.1:6379/15", "RedisLeak97"),
    "PostgreSQL, # ? / and a space unencoded in the password (SQLAlchemy reads them)": (
        ("PostgreSQL", 5432),
        f"postgresql://postgres:Pg#Le?ak/9 1@{PG}/test",
        "Pg#Le?ak/9 1",
    ),
    "Redis, @ and a space unencoded in the password (redis-py reads them)": (
        ("Redis", 6379),
        "redis://:Re@dis Leak 91@127.0.0.1:6379/15",
        "Re@dis Leak 91",
    ),
}


@pytest.mark.services
@pytest.mark.parametrize("form", STORAGE_FORMS)
def test_search_report_and_doctor_leak_no_password(
    form: str, study_yaml: Path, scan: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    (service, port), storage, secret = STORAGE_FORMS[form]
    require_service(service, "127.0.0.1", port)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "MlflowEnvToken93")
    name = yaml.safe_load(study_yaml.read_text())["name"]
    try:
        config = ["--config", str(study_yaml), "--storage", storage]
        assert scan.run("search", *config, "--no-progress")[0] == 0
        assert scan.run("report", *config)[0] == 0
        assert scan.run("doctor", *config)[0] == 0
        trials = scan.add_study(name, storage)
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE], "a real trial ran"
        scan.add_mlflow(f"sqlite:///{scan.root / 'runs' / 'mlflow.db'}")
    finally:
        _delete_study(name, storage)
    assert not (leaks := scan.leaks(secret, "MlflowEnvToken93")), "\n".join(leaks)
    assert any("***" in t for t in scan.texts), "the masked URL is shown"


@pytest.mark.services
def test_ablation_leaks_no_password(in_tmp_dir: Path, scan: Scan) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"leak-abl-{uuid.uuid4().hex[:8]}"
    storage = f"postgresql://postgres:AblLeak94@{PG}/test"
    config = quick_run(
        name=name,
        base={
            "stem": {"out_chs": 8},
            "stages": [{"block": "standard", "out_chs": 8, "stride": 2}],
            "input_size": [8, 8],
        },
        factors={"block": {"levels": ["standard", "separable"]}},
        seeds=1,
        match="params",
    )
    path = in_tmp_dir / "abl.yaml"
    path.write_text(yaml.safe_dump(config))
    try:
        assert scan.run("ablate", "--config", str(path), "--storage", storage, "--no-progress")[0] == 0
        trials = scan.add_study(name, storage)
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
        scan.add_mlflow(f"sqlite:///{in_tmp_dir / 'runs' / 'mlflow.db'}")
    finally:
        _delete_study(name, storage)
    assert not (leaks := scan.leaks("AblLeak94")), "\n".join(leaks)


FAILING = {  # (service needed, storage URL, its password)
    "PostgreSQL, no such database": (
        ("PostgreSQL", 5432),
        f"postgresql://postgres:NoDbLeak95@{PG}/no_such_db",
        "NoDbLeak95",
    ),
    "PostgreSQL query form, no such database": (
        ("PostgreSQL", 5432),
        f"postgresql://postgres@{PG}/no_such_db?password=NoDbLeak96",
        "NoDbLeak96",
    ),
    "MySQL, nothing listening": (None, "mysql+pymysql://root:MyLeak98@127.0.0.1:1/db", "MyLeak98"),
    "Redis, nothing listening": (None, "rediss://:RedisLeak90@127.0.0.1:1/0", "RedisLeak90"),
    "Redis without TLS, nothing listening": (None, "redis://:RedisLeak89@127.0.0.1:1/0", "RedisLeak89"),
}
FAILING |= {  # every special character left unencoded, in every scheme
    f"{case}, {char!r} in the password": (service, url.replace(secret, f"Qzx7{char}Wq{i}k9"), f"Qzx7{char}Wq{i}k9")
    for case, (service, url, secret) in list(FAILING.items())
    if "query" not in case
    for i, char in enumerate(SPECIAL)
}


def _pieces(secret: str) -> list[str]:
    """The secret and its parts between special characters: a driver that misreads the URL may show one."""
    return [secret, *re.split(f"[{re.escape(SPECIAL)}]", secret)]


@pytest.mark.parametrize(
    "case", [pytest.param(case, marks=[pytest.mark.services] if FAILING[case][0] else []) for case in FAILING]
)
def test_failing_storage_is_a_masked_exit_2(case: str, study_yaml: Path, scan: Scan) -> None:
    service, storage, secret = FAILING[case]
    if service:
        require_service(service[0], "127.0.0.1", service[1])
    code, err = scan.run("search", "--config", str(study_yaml), "--storage", storage, "--no-progress")
    assert code == 2, err
    assert "error:" in err and "***" in err
    assert not (leaks := scan.leaks(*_pieces(secret))), "\n".join(leaks)


@pytest.mark.parametrize("password", ["TrackLeak99", *(f"Track{c}Leak99" for c in SPECIAL)])
def test_unreachable_tracking_server_is_a_masked_exit_2(password: str, study_yaml: Path, scan: Scan) -> None:
    uri = f"http://alice:{password}@127.0.0.1:1"
    code, err = scan.run("search", "--config", str(study_yaml), "--tracking-uri", uri, "--no-progress")
    assert code == 2 and "http://alice:***@127.0.0.1:1" in err, err
    assert not (leaks := scan.leaks(*_pieces(password))), "\n".join(leaks)


def test_mlflow_prints_no_run_link_with_the_tracking_password(
    mlflow_server: str, study_yaml: Path, scan: Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow prints "View run … at: <tracking URI>/#/…" as each run ends; with a password in the URI it must not."""
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)  # unset before, and again after
    password = "View@Leak 88"  # characters requests (MLflow's HTTP client) accepts unencoded
    uri = mlflow_server.replace("://", f"://alice:{password}@")
    assert scan.run("search", "--config", str(study_yaml), "--tracking-uri", uri, "--no-progress")[0] == 0
    assert not (leaks := scan.leaks(password)), "\n".join(leaks)


def test_a_crash_prints_its_traceback_masked(study_yaml: Path, scan: Scan, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("lost postgresql://u:CrashLeak13@h/db")

    monkeypatch.setattr("blocknas.search.study.run_search", crash)
    code, err = scan.run("search", "--config", str(study_yaml), "--no-progress")
    assert code == 1 and "Traceback" in err and "RuntimeError: lost postgresql://u:***@h/db" in err, err
    assert not (leaks := scan.leaks("CrashLeak13")), "\n".join(leaks)
