"""A damaged record anywhere in a journal file costs that record only, never the studies around it.

The journals here are real: Optuna studies written through Optuna's own journal backend, then
damaged the way a disk or a writer that is not blocknas damages them (a zeroed block, a write cut
short and appended to), then opened through blocknas's storage opener, here and in two real
processes at once.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from blocknas.search.tracking import StorageError, check_study, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDIES = {"first": 3, "second": 2}


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def _trials(storage: optuna.storages.BaseStorage) -> dict[str, dict[int, tuple[str, dict, list[float] | None]]]:
    """Study → trial number → (state, params, values) of every trial."""
    return {
        name: {
            t.number: (t.state.name, t.params, t.values)
            for t in optuna.load_study(study_name=name, storage=storage).trials
        }
        for name in optuna.get_all_study_names(storage)
    }


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two studies written with Optuna alone (no blocknas code touches the file)."""
    path = tmp_path_factory.mktemp("journal") / "optuna.journal"
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    for name, n_trials in STUDIES.items():
        optuna.create_study(study_name=name, storage=storage).optimize(_objective, n_trials=n_trials)
    return path


def _completing_line(lines: list[bytes], study: str, number: int) -> int:
    """0-based index of the record that makes trial ``number`` of ``study`` COMPLETE."""
    study_ids = [json.loads(line).get("study_name") for line in lines if json.loads(line)["op_code"] == 0]
    trial_ids = [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]
    owner = [study_ids[json.loads(lines[i])["study_id"]] for i in trial_ids]
    trial_id = [k for k, name in enumerate(owner) if name == study][number]
    return next(
        i
        for i, line in enumerate(lines)
        if json.loads(line)["op_code"] == 6 and json.loads(line)["trial_id"] == trial_id
    )


def _damaged(journal: Path, folder: Path, damage: bytes, *, merge: bool) -> tuple[Path, int, bytes]:
    """A copy of ``journal`` whose record completing trial 1 of ``first`` is replaced by (or, with
    ``merge``, prefixed with) ``damage``; returns the copy, the damaged line's 1-based number and its bytes."""
    lines = journal.read_bytes().splitlines(keepends=True)
    index = _completing_line(lines, "first", 1)
    assert 0 < index < len(lines) - 3  # in the middle, another study's records after it
    lines[index] = damage + lines[index] if merge else damage
    path = folder / "optuna.journal"
    path.write_bytes(b"".join(lines))
    return path, index + 1, lines[index]


def test_a_bad_record_in_the_middle_costs_only_that_record(
    journal: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _trials(optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    path, line, bad = _damaged(journal, tmp_path, b"\x00" * 40 + b"\n", merge=False)  # a zeroed block
    with pytest.raises(ValueError):  # what Optuna alone makes of it: no study in the file loads
        _trials(optuna.storages.JournalStorage(JournalFileBackend(str(path))))

    with caplog.at_level(logging.WARNING):
        after = _trials(open_storage(str(path)))
    assert after["second"] == before["second"]
    assert {n: v for n, v in after["first"].items() if n != 1} == {n: v for n, v in before["first"].items() if n != 1}
    assert after["first"][1][0] == TrialState.RUNNING.name  # only the lost completion is missing
    assert f"line {line} " in caplog.text and "optuna.journal.bad" in caplog.text
    kept = (tmp_path / "optuna.journal.bad").read_bytes()
    assert kept.startswith(f"line {line} ".encode()) and kept.endswith(b": " + bad)  # the whole line, byte for byte

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        optuna.load_study(study_name="first", storage=open_storage(str(path))).optimize(_objective, n_trials=1)
        again = _trials(optuna.storages.JournalStorage(JournalFileBackend(str(path))))  # Optuna alone reads it
    assert len(again["first"]) == STUDIES["first"] + 1
    assert "not a readable record" not in caplog.text, "the repair happens once"
    assert (tmp_path / "optuna.journal.bad").read_bytes() == kept


def test_a_write_cut_short_and_appended_to_loses_nothing(journal: Path, tmp_path: Path) -> None:
    """A plain Optuna writer appending after a torn record merges the two into one line: the
    complete record after the torn fragment is kept; the fragment (a write that never finished) goes aside."""
    before = _trials(optuna.storages.JournalStorage(JournalFileBackend(str(journal))))
    torn = b'{"op_code":5,"worker_id":"dead-'
    path, line, bad = _damaged(journal, tmp_path, torn, merge=True)
    assert _trials(open_storage(str(path))) == before
    kept = (tmp_path / "optuna.journal.bad").read_bytes()
    assert kept.startswith(f"line {line} of optuna.journal, removed ".encode()) and kept.endswith(b": " + bad)
    assert path.read_bytes() == journal.read_bytes()


WORKER = """
import json, sys
from pathlib import Path
import optuna
from blocknas.search.tracking import StorageError, check_study, open_storage
Path(sys.argv[2]).touch()  # imported: about to open the journal
storage = open_storage(sys.argv[1])
trials = {n: len(optuna.load_study(study_name=n, storage=storage).trials) for n in optuna.get_all_study_names(storage)}
print(json.dumps(trials))
"""


def test_two_processes_opening_a_damaged_journal_repair_it_once(journal: Path, tmp_path: Path) -> None:
    path, line, bad = _damaged(journal, tmp_path, b"not json at all\n", merge=False)
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()  # both processes find the damage, then wait for the lock together
    try:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(path), str(tmp_path / f"ready{i}")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        assert path.read_bytes().count(b"not json at all") == 1, "nothing is rewritten without the lock"
    finally:
        lock.release()
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert json.loads(out) == {"first": STUDIES["first"], "second": STUDIES["second"]}
    assert sum(f"line {line} " in err for _, err in outputs) == 1, [err for _, err in outputs]
    kept = (tmp_path / "optuna.journal.bad").read_bytes()
    assert kept.count(b"not json at all") == 1 and kept.endswith(b": " + bad), kept
    assert b"not json at all" not in path.read_bytes()


def test_a_lost_trial_creation_is_refused_not_repaired(journal: Path, tmp_path: Path) -> None:
    """Optuna numbers trials by the order of their creation records: without one, every later
    trial's records would land on the trial before it. Nothing is changed; the error says how
    to keep what comes before the line."""
    lines = journal.read_bytes().splitlines(keepends=True)
    created = [i for i, line in enumerate(lines) if json.loads(line)["op_code"] == 4]
    index = created[1]  # the second trial's creation: later trials' records name the ids after it
    lines[index] = b"\x00" * 40 + b"\n"
    path = tmp_path / "optuna.journal"
    path.write_bytes(b"".join(lines))
    for opening in (
        lambda: open_storage(str(path)),
        lambda: check_study("first", storage_url=str(path), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"),
    ):
        with pytest.raises(StorageError) as error:
            opening()
        message = str(error.value)
        assert f"line {index + 1} " in message and "created a trial" in message, message
        assert f"head -n {index} " in message, message
    assert path.read_bytes() == b"".join(lines), "nothing changed"
    assert not (tmp_path / "optuna.journal.bad").exists()
