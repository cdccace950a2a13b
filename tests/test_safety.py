"""Nothing a run does can destroy a study or a user's files.

A torn journal record is repaired, not appended to; an export removes only what it wrote;
names, YAML and numbers that could reach outside a folder, blow up or mean nothing are
config errors.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import TrialState

from blocknas.blocks import ConfigError
from blocknas.search.cli import main
from blocknas.search.files import check_safe_name
from blocknas.search.study import StudyConfig
from blocknas.search.tracking import open_storage, repair_torn_tail
from blocknas.search.training import FullTrainConfig

from .conftest import REPO_ROOT

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
