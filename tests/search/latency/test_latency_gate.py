"""The machine-wide latency gate: sibling trainers pause while a measurement runs, and only then."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from blocknas.search.latency_gate import LatencyGate, default_gate


def _sibling_trainer(folder: str, ready, steps: int, out) -> None:  # type: ignore[no-untyped-def]
    """Another process: signal, then take ``steps`` training steps through the gate; report its pauses."""
    gate = LatencyGate(folder)
    ready.set()
    for _ in range(steps):
        with gate.step():
            pass
    out.put((gate.pauses, gate.paused_s))


def test_a_sibling_trainer_pauses_while_latency_is_measured(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    measurer = LatencyGate(tmp_path)
    with measurer.measuring():
        sibling = ctx.Process(target=_sibling_trainer, args=(str(tmp_path), ready, 3, out))
        sibling.start()
        assert ready.wait(60)
        # the gate is closed: the sibling's first step cannot finish while we hold it
        sibling.join(0.5)
        assert sibling.is_alive()
        assert out.empty()
    pauses, paused_s = out.get(timeout=60)
    sibling.join(60)
    assert pauses == 1 and paused_s > 0  # only the first step waited; the other two found the gate open


def test_a_measurement_waits_for_the_step_in_flight(tmp_path: Path) -> None:
    trainer, measurer = LatencyGate(tmp_path), LatencyGate(tmp_path)
    order = []
    with trainer.step():
        # a second descriptor sees the step: an exclusive try-lock on busy fails while the step runs
        import fcntl

        try:
            fcntl.flock(measurer._busy, fcntl.LOCK_EX | fcntl.LOCK_NB)
            order.append("measured during the step")
        except BlockingIOError:
            order.append("blocked")
    with measurer.measuring():
        order.append("measured after")
    assert order == ["blocked", "measured after"]
    assert trainer.pauses == 0


def test_the_gate_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv("BLOCKNAS_LATENCY_GATE", "off")
    assert default_gate() is None
    monkeypatch.setenv("BLOCKNAS_LATENCY_GATE", "on")
    assert default_gate() is default_gate()


def test_a_measurement_stops_waiting_for_a_stuck_step(tmp_path: Path) -> None:
    stuck, measurer = LatencyGate(tmp_path), LatencyGate(tmp_path)
    with stuck.step(), measurer.measuring(wait_s=0.05) as held:
        assert held is False  # measured beside the stuck step, and says so
    with measurer.measuring(wait_s=0.05) as held:
        assert held is True


def _sibling_validator(folder: str, ready, out) -> None:  # type: ignore[no-untyped-def]
    """Another process: validate a small network on 4 batches through the machine-wide gate in ``folder``."""
    import os
    import tempfile

    os.environ["TMPDIR"] = folder
    tempfile.tempdir = None
    import torch

    from blocknas.search.training import evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    ready.set()
    evaluate(model, torch.zeros(8, 3, 2, 2), torch.zeros(8, dtype=torch.long), batch_size=2, device="cpu")
    gate = default_gate()
    assert gate is not None
    out.put((gate.pauses, gate.paused_s))


def test_a_sibling_validation_pauses_while_latency_is_measured(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    import os

    measurer = LatencyGate(tmp_path / f"blocknas-latency-{os.getuid()}")
    with measurer.measuring():
        sibling = ctx.Process(target=_sibling_validator, args=(str(tmp_path), ready, out))
        sibling.start()
        assert ready.wait(120)
        sibling.join(1.0)
        assert sibling.is_alive() and out.empty(), "validation ran through a closed gate"
    pauses, paused_s = out.get(timeout=120)
    sibling.join(60)
    assert pauses == 1 and paused_s > 0
