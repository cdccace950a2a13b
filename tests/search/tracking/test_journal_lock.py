"""A journal writer whose lock was broken (Optuna's grace period) retries cleanly, never crashes.

Real processes: writer A stops (``SIGSTOP``, pause point ``journal-append``) holding the journal's
lock before its append; writer B waits out the grace period, breaks the lock and writes; A is
continued. A must notice, write under a fresh lock, and exit 0 with no traceback; the journal
stays whole (every line one record), both results land once, and no lock is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from blocknas.search.pause_points import PAUSE_ENV
from blocknas.search.tracking.journal import LOCK_GRACE_ENV, open_journal_backend

_TELL = """
import sys, optuna
from blocknas.search.tracking.journal import open_journal_backend
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = optuna.storages.JournalStorage(open_journal_backend(sys.argv[1]))
study = optuna.load_study(study_name="s", storage=storage)
study.tell(int(sys.argv[2]), float(sys.argv[3]))
"""


def _stopped(process: subprocess.Popen[str]) -> bool:
    """Whether ``process`` is stopped (``SIGSTOP``): state ``T`` in ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{process.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _tell(journal: Path, trial: int, value: float, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _TELL, str(journal), str(trial), str(value)],
        env={**os.environ, LOCK_GRACE_ENV: "3", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_writer_whose_lock_was_broken_writes_again_under_a_fresh_lock(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    study = optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(open_journal_backend(journal)))
    study.ask(), study.ask()  # trials 0 and 1, RUNNING

    a = _tell(journal, 0, 1.0, **{PAUSE_ENV: "journal-append"})
    try:
        deadline = time.monotonic() + 60
        while not _stopped(a):
            assert a.poll() is None and time.monotonic() < deadline, a.communicate()
            time.sleep(0.05)
        assert Path(f"{journal}.lock").is_symlink(), "A stopped holding the journal's lock"
        b = _tell(journal, 1, 2.0)
        _, b_err = b.communicate(timeout=60)  # waits out the 3-s grace period, breaks A's lock
        assert b.returncode == 0, b_err
        assert "breaking it" in b_err, b_err
    finally:
        a.send_signal(signal.SIGCONT)
    _, a_err = a.communicate(timeout=60)

    assert a.returncode == 0, a_err
    assert "Traceback" not in a_err and "did not possess lock" not in a_err, a_err
    assert "lock" in a_err and "broken" in a_err, a_err  # one warning says what happened
    for number, line in enumerate(journal.read_bytes().splitlines(keepends=True), start=1):
        assert line.endswith(b"\n") and json.loads(line), f"line {number} is not one whole record: {line!r}"
    trials = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(open_journal_backend(journal))
    ).get_trials()
    assert [(t.state, t.value) for t in trials] == [
        (optuna.trial.TrialState.COMPLETE, 1.0),
        (optuna.trial.TrialState.COMPLETE, 2.0),
    ]
    assert not Path(f"{journal}.lock").exists() and not Path(f"{journal}.lock").is_symlink()
