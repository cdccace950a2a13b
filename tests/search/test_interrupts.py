"""Ctrl-C / SIGTERM are deferred out of storage writes and delivered right after them."""

from __future__ import annotations

import _thread
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import optuna
import pytest

from blocknas.search.interrupts import (
    PROTECTED_MODULES,
    install_interrupt_handlers,
    interrupt_pending,
)
from blocknas.search.tracking import open_storage


@pytest.fixture
def handlers() -> Iterator[None]:
    """Install blocknas' handlers for one test; drain any deferred signal and restore the old ones."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    install_interrupt_handlers()
    try:
        yield
    finally:
        _settle()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _settle(seconds: float = 0.2) -> None:
    """Swallow the interrupts still on their way (deferred ones, tripped but not yet handled)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end or interrupt_pending():
        try:
            time.sleep(0.01)
        except KeyboardInterrupt:
            pass


def _busy(seconds: float) -> None:
    """Run Python bytecode (where signal handlers get their turn) for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _as_module(name: str, source: str) -> dict:
    """Names defined by ``source`` executed as if it were module ``name``."""
    namespace: dict = {"__name__": name}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    return namespace


def _modules(tb: TracebackType | None) -> list[str]:
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next
    return names


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_in_ordinary_code_raises_keyboard_interrupt_at_once(handlers: None, signum: int) -> None:
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
        _busy(5)
    assert time.monotonic() - start < 2  # at once, not after the 5 s busy loop
    assert not interrupt_pending()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_a_storage_write_waits_until_the_write_returns(handlers: None, signum: int) -> None:
    write: Callable[[int, float, list], None] = _as_module(
        "sqlalchemy.blocknas_test_write",
        "import os, time\n"
        "def write(signum, seconds, log):\n"
        "    os.kill(os.getpid(), signum)\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "    log.append(time.monotonic())\n",
    )["write"]
    committed: list[float] = []
    with pytest.raises(KeyboardInterrupt):
        write(signum, 0.5, committed)
        _busy(5)
    assert len(committed) == 1, "the signal interrupted the write"
    assert time.monotonic() - committed[0] < 2, (
        "the signal came late: not as the write returned (the busy loop runs 5 s)"
    )
    assert not interrupt_pending()


def test_a_second_signal_while_the_first_waits_stops_at_once(handlers: None) -> None:
    """The way out of a storage call that hangs (e.g. retrying an unreachable server): Ctrl-C twice."""
    hang: Callable[[list], None] = _as_module(
        "mlflow.blocknas_test_hang",
        "import os, signal, time\n"
        "def busy(seconds):\n"
        "    end = time.monotonic() + seconds\n"
        "    while time.monotonic() < end:\n"
        "        pass\n"
        "def hang(log):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    busy(0.3)\n"
        "    log.append('first deferred')\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    busy(5)\n"
        "    log.append('returned')\n",
    )["hang"]
    log: list[str] = []
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="repeated"):
        hang(log)
    assert log == ["first deferred"], "the second signal must stop the call, not wait for it"
    assert time.monotonic() - start < 3
    assert not interrupt_pending() and sys.getprofile() is None


def test_interrupts_hammering_a_journal_storage_never_land_inside_it(handlers: None, tmp_path: Path) -> None:
    """Ctrl-C delivered every few ms while trials are written: every one lands outside Optuna's storage
    (before this handler, one could land inside the journal's file lock and surface as FileNotFoundError)."""
    path = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="hammer", storage=open_storage(str(path)))
    stop, landed_one = threading.Event(), threading.Event()

    def hammer() -> None:  # one Ctrl-C at a time, at a random moment, the next once it has landed
        rng = random.Random(0)
        while not stop.is_set():
            time.sleep(rng.uniform(0, 0.004))
            landed_one.clear()
            _thread.interrupt_main(signal.SIGINT)
            landed_one.wait()

    hammering = threading.Thread(target=hammer, daemon=True)
    created: list[int] = []
    landed: list[list[str]] = []
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            if not hammering.is_alive():
                hammering.start()
            trial = study.ask()
            created.append(trial.number)
            study.tell(trial, float(trial.number))
        except KeyboardInterrupt as exc:
            landed.append(_modules(exc.__traceback__))
            landed_one.set()
    stop.set()
    _settle()
    landed_one.set()
    hammering.join()

    assert len(landed) >= 50, "the hammer thread should have interrupted the loop many times"
    inside = [mods for mods in landed if any(m.startswith(PROTECTED_MODULES) for m in mods)]
    assert not inside, f"{len(inside)} interrupts landed inside storage code, e.g. {inside[0]}"
    reloaded = optuna.load_study(study_name="hammer", storage=open_storage(str(path)))
    numbers = {t.number for t in reloaded.get_trials()}
    assert set(created) <= numbers
    assert not list(tmp_path.glob("optuna.journal.lock*")), "a journal lock file was left behind"


def test_a_signal_while_the_cli_starts_up_is_answered_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The handlers are installed before the heavy imports: a SIGTERM there (a worker killed as it starts,
    as the chaos test does) is a KeyboardInterrupt that ``main`` must answer with 130, not let escape."""
    from blocknas.search import cli
    from blocknas.search.tracking import masking

    def signal_arrives(*_: object) -> None:
        raise KeyboardInterrupt("signal 15")

    monkeypatch.setattr(masking, "remember_secrets", signal_arrives)
    monkeypatch.setattr(cli, "install_interrupt_handlers", lambda: None)  # the test's own process keeps its handlers
    assert cli.main(["doctor", "--config", "configs/default.yaml"]) == 130
    assert "interrupted" in capsys.readouterr().err
