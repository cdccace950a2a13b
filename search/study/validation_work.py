"""The trainings of a validation, each done once among any number of ``blocknas validate`` processes.

Each finished training is one JSON line in ``results.jsonl`` (appended under a file lock),
keyed by a training key (architecture, seed, data and training settings: the budget), so a
rerun, or a second process, skips it. Before training, a process claims the key with a claim
file (:class:`~blocknas.search.tracking.FileClaims`, the claim primitive's file backend) and checks the results again under the
claim; a process killed mid-training leaves its claim, which the next process to look takes
over once the holder is gone. Processes on several machines share the work when the folder is
on a file system they all see; a claim of another host is waited for until it is released.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocknas.search.data import DataConfig
from blocknas.search.files import file_lock
from blocknas.search.tracking import FileClaims, worker_id
from blocknas.search.training import TrainConfig

from .validation_select import SelectedNetwork

__all__ = ["Retraining", "TrainingRecords", "retrain_all"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Retraining:
    """One training of a validation: a network under a budget (``kind`` ``longer`` or ``noise``)."""

    key: str
    kind: str
    network: SelectedNetwork
    train: TrainConfig
    data: DataConfig
    seed: int


class TrainingRecords:
    """The results file of one validation folder: one JSON object per finished training, by key."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"

    def read(self) -> dict[str, dict[str, Any]]:
        """Every recorded training by key (the first record of a key wins; an unreadable line is skipped)."""
        if not self.path.is_file():
            return {}
        with file_lock(self.folder / ".results.lock"):
            lines = self.path.read_text().splitlines()
        found: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                key, accuracy = str(record["key"]), float(record["accuracy"])
            except (ValueError, KeyError, TypeError):
                log.warning("%s:%d is not a result; skipped", self.path, number)
                continue
            found.setdefault(key, {**record, "accuracy": accuracy})
        return found

    def add(self, record: Mapping[str, Any]) -> None:
        """Append one finished training."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / ".results.lock"), self.path.open("a") as handle:
            handle.write(json.dumps(dict(record), sort_keys=True) + "\n")


def retrain_all(
    jobs: Sequence[Retraining],
    store: TrainingRecords,
    train: Callable[[Retraining], tuple[float, float]],
    *,
    poll_s: float = 2.0,
) -> int:
    """Train every job that no record holds yet, one claim at a time; returns how many this process trained.

    Returns once every job has a record: trained here, earlier, or by another process (waited for).

    Args:
        jobs: The trainings.
        store: Where finished trainings are recorded.
        train: Trains one job; returns ``(accuracy, seconds)``.
        poll_s: Seconds between looks while every job left is held by another process.
    """
    claims = FileClaims(store.folder / "claims")
    trained = 0
    waiting: dict[str, str] = {}
    while pending := [job for job in jobs if job.key not in store.read()]:
        held = {}
        for job in pending:
            claim = claims.claim(job.key)
            if claim.holder is not None:
                held[job.key] = str(claim.holder)
                continue
            try:
                if job.key not in store.read():  # looked at again, now under the claim
                    log.info("%d of %d trainings recorded; next: %s", len(jobs) - len(pending), len(jobs), _what(job))
                    _train_and_record(job, store, train)
                    trained += 1
            finally:
                claims.release(job.key)
            break
        else:
            if held != waiting:
                log.info("waiting for %d training(s) held by %s", len(held), ", ".join(sorted(set(held.values()))))
                waiting = held
            time.sleep(poll_s)
    return trained


def _what(job: Retraining) -> str:
    return f"trial {job.network.trial}, {job.kind} budget ({job.train.epochs} epochs, seed {job.seed})"


def _train_and_record(
    job: Retraining, store: TrainingRecords, train: Callable[[Retraining], tuple[float, float]]
) -> None:
    net = job.network
    accuracy, seconds = train(job)
    store.add(
        {
            "key": job.key,
            "kind": job.kind,
            "trial": net.trial,
            "arch_hash": net.arch.short_hash(),
            "epochs": job.train.epochs,
            "train_images": job.data.max_train_samples,
            "seed": job.seed,
            "accuracy": accuracy,
            "seconds": seconds,
            "worker": worker_id(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )
    log.info("%s: accuracy %.4f in %.1f s", _what(job), accuracy, seconds)
