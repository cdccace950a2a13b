#!/usr/bin/env python
"""Throughput of 1 worker vs N workers on one study: trials per hour, nothing lost or duplicated.

Each configuration runs a fresh study (same config, same total trials) through
``blocknas workers -n K`` — the same command users run — on a shared journal file and
one MLflow SQLite store. Threads per worker are cores // K, so 1 worker may use all cores.

    python benchmarks/scaling.py [--trials 12] [--workers 2]

Writes benchmarks/results/scaling.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import yaml

from blocknas.search.study import load_study_config, trial_counts
from blocknas.search.tracking import StudyTracker, diagnose, open_storage

RESULTS = Path(__file__).parent / "results" / "scaling.md"

CONFIG = {
    "space": "tiny",
    "data": {"name": "digits"},
    "train": {"epochs": 2, "batch_size": 64},
    "latency": {"time_cap_s": 0.2},
    "sampler": "random",
}


def run(workers: int, trials: int, folder: Path) -> dict[str, float | int | bool]:
    name = f"scale{workers}"
    config_path = folder / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump({"name": name, "n_trials": trials, **CONFIG}))
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "blocknas.search.cli", "workers", "-n", str(workers), "--config", str(config_path)],
        cwd=folder, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=open_storage(str(folder / "runs" / "optuna.journal")))
    trials_done = study.get_trials()
    first = min(t.datetime_start for t in trials_done)
    last = max(t.datetime_complete for t in trials_done)
    busy = (last - first).total_seconds()
    config = load_study_config(config_path)
    tracker = StudyTracker(f"sqlite:///{folder / 'runs' / 'mlflow.db'}", config.name)
    diagnosis = diagnose(study, tracker)
    return {
        "workers": workers,
        "trials": len(trials_done),
        "complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials_done),
        "counted": trial_counts(study)[0],
        "wall_s": wall,
        "trial_span_s": busy,
        "trials_per_hour": 3600 * len(trials_done) / busy,
        "consistent": diagnosis.ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, args.workers):
            folder = Path(tmp) / f"w{workers}"
            folder.mkdir()
            rows.append(run(workers, args.trials, folder))
    base, many = rows
    speedup = many["trials_per_hour"] / base["trials_per_hour"]
    wall_speedup = base["wall_s"] / many["wall_s"]
    intact = all(r["trials"] == args.trials and r["counted"] == args.trials and r["consistent"] for r in rows)
    lines = [
        f"# Scaling: 1 worker vs {args.workers} workers on one study",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {os.cpu_count()} cores, "
        f"`python benchmarks/scaling.py --trials {args.trials} --workers {args.workers}`: space `tiny`, digits,",
        "2 epochs per trial, journal-file storage, one MLflow SQLite store, `blocknas workers -n K` (threads = cores // K).",
        "",
        "| workers | trials | complete | trials/hour (first start → last finish) | wall s (incl. process start) | Optuna ↔ MLflow consistent |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['trials']} | {r['complete']} | {r['trials_per_hour']:.0f} | {r['wall_s']:.1f} | {r['consistent']} |"
        )
    lines += [
        "",
        f"**Speed-up: {speedup:.2f}×** in trials per hour (goal ≥ 1.7×: {'met' if speedup >= 1.7 else 'NOT met'}); "
        f"{wall_speedup:.2f}× in wall time including interpreter start-up.",
        f"No trial lost or duplicated: {'yes' if intact else 'NO'} (each study holds exactly {args.trials} trials, "
        "each with exactly one MLflow child run, checked by `blocknas doctor`'s diagnosis).",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if intact else 1


if __name__ == "__main__":
    sys.exit(main())
