#!/usr/bin/env python
"""Every core: the default study with one worker and with two, and its latencies against an idle machine.

    python benchmarks/parallel.py [--config configs/default.yaml] [--n-trials 30] [--out benchmarks/results/parallel]

1. ``blocknas search --parallel 1``, then ``--parallel 2``: the same config, seed and trial count, each in a
   fresh folder (its own journal, MLflow store and exports) and without the config's ``timeout_s``, so both
   run every trial. Wall time is the command's, start to exit (interpreter start-up and the summary included).
2. An idle pass: every network either study measured (not the duplicates, which copy a measurement) is
   measured again here, one at a time with nothing beside it, with the study's latency target, twice (the
   second round in reverse order: the noise floor of two idle measurements).
3. Kendall τ and median |Δ| of the 2-worker study's latencies against the idle ones (goals: τ ≥ 0.95,
   median |Δ| ≤ 3 %), the same for the 1-worker study, and the wall-time ratio (goal ≤ 0.6×).

Writes ``<out>.md`` and ``<out>.json``. Run it on an otherwise idle machine: the load average before and
after each step is recorded, and the report warns when the machine was busy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import timm
from scipy.stats import kendalltau

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ArchConfig
from blocknas.search.latency import device_fingerprint, measure_latency
from blocknas.search.study import (
    ARCH_ATTR,
    DUPLICATE_OF_ATTR,
    LATENCY_MEASURED_ATTR,
    StudyConfig,
    available_cores,
    load_study_config,
    trial_counts,
)
from blocknas.search.tracking import WORKER_ATTR, open_storage

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "parallel"
GOALS = {"wall_ratio": 0.6, "kendall_tau": 0.95, "median_abs_delta_pct": 3.0}
NO_TIMEOUT_S = 7 * 24 * 3600.0


def git_commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return (head.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def run_study(config_path: Path, n_trials: int, parallel: int, folder: Path) -> dict[str, Any]:
    """Run the study with ``--parallel`` in a fresh ``folder``; its wall time, trial counts and latencies."""
    folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "BLOCKNAS_PARALLEL"}
    command = [
        sys.executable, "-m", "blocknas.search.cli", "search", "--config", str(config_path),
        "--n-trials", str(n_trials), "--timeout", str(NO_TIMEOUT_S), "--parallel", str(parallel), "--no-progress",
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    (folder / "output.txt").write_text(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"blocknas search --parallel {parallel} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    config = load_study_config(config_path)
    study = optuna.load_study(study_name=config.name, storage=open_storage(str(folder / "runs" / "optuna.journal")))
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    measured = {
        ArchConfig.from_dict(t.user_attrs[ARCH_ATTR]).short_hash(): {
            "arch": t.user_attrs[ARCH_ATTR],
            "latency_ms": float(t.user_attrs[LATENCY_MEASURED_ATTR]),
            "trial": t.number,
        }
        for t in trials
        if LATENCY_MEASURED_ATTR in t.user_attrs and t.user_attrs.get(DUPLICATE_OF_ATTR) is None
    }
    return {
        "parallel": parallel,
        "wall_s": wall,
        "trial_span_s": (max(ends) - min(starts)).total_seconds() if starts and ends else None,
        "trials_counted": trial_counts(study)[0],
        "workers_seen": len({t.user_attrs.get(WORKER_ATTR) for t in trials} - {None}),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "measured": measured,
    }


def idle_pass(networks: dict[str, dict[str, Any]], config: StudyConfig) -> dict[str, list[float]]:
    """Two idle latency measurements (p50, ms) of each network, the second round in reverse order."""
    models = {h: timm.create_model("blocknet", arch=ArchConfig.from_dict(n["arch"])) for h, n in networks.items()}
    results: dict[str, list[float]] = {h: [] for h in networks}
    for order in (list(models), list(reversed(models))):
        for h in order:
            arch = ArchConfig.from_dict(networks[h]["arch"])
            results[h].append(measure_latency(models[h], (arch.in_chans, *arch.input_size), config.latency).p50_ms)
    return results


def agreement(pairs: list[tuple[float, float]]) -> dict[str, float | int | None]:
    """Kendall τ and median |Δ| % of (measured, idle) latency pairs."""
    if len(pairs) < 2:
        return {"n": len(pairs), "kendall_tau": None, "median_abs_delta_pct": None}
    measured, idle = zip(*pairs)
    tau = float(kendalltau(measured, idle).statistic)
    delta = statistics.median(abs(m - i) / i * 100 for m, i in pairs)
    return {"n": len(pairs), "kendall_tau": tau, "median_abs_delta_pct": delta}


def markdown(result: dict[str, Any]) -> str:
    verdict = result["verdict"]
    busy = max(r["load_before"] for r in result["runs"]) > 0.5
    lines = [
        f"# Every core: {result['n_trials']} trials with 1 worker and with 2, latency against an idle pass",
        "",
        f"Run {result['date']} at commit `{result['commit']}` on {result['cores']} cores ({result['cpu']}), "
        f"`{result['command']}`; config `{result['config']}`, latency gate "
        f"{'off' if os.environ.get('BLOCKNAS_LATENCY_GATE') == 'off' else 'on'}.",
        "",
        "| workers | wall s | first start → last finish s | trials | workers that ran trials | load avg before → after |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["runs"]:
        span = f"{r['trial_span_s']:.1f}" if r["trial_span_s"] is not None else "—"
        lines.append(
            f"| {r['parallel']} | {r['wall_s']:.1f} | {span} | {r['trials_counted']} | {r['workers_seen']} | "
            f"{r['load_before']:.2f} → {r['load_after']:.2f} |"
        )
    lines += [
        "",
        f"**Wall time, 2 workers / 1 worker: {result['wall_ratio']:.3f}×** (goal ≤ {GOALS['wall_ratio']}: "
        f"{verdict['wall_ratio']}).",
        "",
        "Latency p50 of the networks each study measured, against the idle pass (same target, "
        "nothing beside it; first idle round):",
        "",
        "| latencies from | networks | Kendall τ | median abs. Δ % |",
        "|---|---:|---:|---:|",
    ]
    for label, key in (("2 workers", "two_vs_idle"), ("1 worker", "one_vs_idle"), ("idle, 2nd round", "idle_floor")):
        a = result[key]
        tau = f"{a['kendall_tau']:.3f}" if a["kendall_tau"] is not None else "—"
        delta = f"{a['median_abs_delta_pct']:.2f}" if a["median_abs_delta_pct"] is not None else "—"
        lines.append(f"| {label} | {a['n']} | {tau} | {delta} |")
    lines += [
        "",
        f"**2 workers against idle: τ {verdict['kendall_tau']} (goal ≥ {GOALS['kendall_tau']}), "
        f"median |Δ| {verdict['median_abs_delta_pct']} (goal ≤ {GOALS['median_abs_delta_pct']} %).** "
        "The idle second round is the floor: two idle measurements of the same networks agree that well.",
    ]
    if busy:
        lines += ["", "**Warning:** the machine was busy (load average above 0.5 before a run): not an idle figure."]
    return "\n".join(lines) + "\n"


def _verdict(value: float | None, goal: float, *, at_most: bool) -> str:
    if value is None:
        return "not measured"
    met = value <= goal if at_most else value >= goal
    return f"{value:.3f}, {'met' if met else 'NOT met'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="study YAML")
    parser.add_argument("--n-trials", type=int, default=30, help="trials in each study (default 30)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="results path without suffix (.md and .json)")
    parser.add_argument("--workdir", help="folder for the two studies (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    config_path = Path(args.config).resolve()
    config = load_study_config(config_path)
    with tempfile.TemporaryDirectory(prefix="blocknas-parallel-") as tmp:
        work = Path(args.workdir or tmp)
        runs = [run_study(config_path, args.n_trials, k, work / f"parallel{k}") for k in (1, 2)]
        one, two = runs
        networks = {**one["measured"], **two["measured"]}
        load_idle = os.getloadavg()[0]
        idle = idle_pass(networks, config)
    two_pairs = [(n["latency_ms"], idle[h][0]) for h, n in two["measured"].items()]
    one_pairs = [(n["latency_ms"], idle[h][0]) for h, n in one["measured"].items()]
    floor_pairs = [(rounds[1], rounds[0]) for rounds in idle.values()]
    result: dict[str, Any] = {
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        "commit": git_commit(),
        "command": "python benchmarks/parallel.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": str(config_path.relative_to(ROOT) if config_path.is_relative_to(ROOT) else config_path),
        "n_trials": args.n_trials,
        "cores": available_cores(),
        "cpu": device_fingerprint(config.latency).get("cpu_model") or platform.machine(),
        "load_before_idle_pass": load_idle,
        "runs": [{k: v for k, v in r.items() if k != "measured"} for r in runs],
        "wall_ratio": two["wall_s"] / one["wall_s"],
        "two_vs_idle": agreement(two_pairs),
        "one_vs_idle": agreement(one_pairs),
        "idle_floor": agreement(floor_pairs),
        "latencies": {
            h: {
                "one_worker_ms": one["measured"].get(h, {}).get("latency_ms"),
                "two_workers_ms": two["measured"].get(h, {}).get("latency_ms"),
                "idle_ms": idle[h],
            }
            for h in networks
        },
        "goals": GOALS,
    }
    result["verdict"] = {
        "wall_ratio": _verdict(result["wall_ratio"], GOALS["wall_ratio"], at_most=True),
        "kendall_tau": _verdict(result["two_vs_idle"]["kendall_tau"], GOALS["kendall_tau"], at_most=False),
        "median_abs_delta_pct": _verdict(
            result["two_vs_idle"]["median_abs_delta_pct"], GOALS["median_abs_delta_pct"], at_most=True
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
