#!/usr/bin/env python
"""The sampler, by evidence: tpe, nsga2, random and gp on the default study at equal budget, by hypervolume.

    python benchmarks/samplers.py [--timeout-s 360 | --n-trials 30] [--seeds 5] [--jobs 1] [--samplers tpe nsga2 random gp]
    python benchmarks/samplers.py --report-only        # the table again from the rows

Each sampler × seed runs the study (``--config``, default ``configs/default.yaml``) in a fresh folder with
``sampler`` and ``seed`` set, no trial limit and ``timeout_s`` = ``--timeout-s``: every run gets the same
wall time (a trial in progress at the timeout still finishes). On a shared machine whose load changes
during the benchmark, equal wall time is not an equal budget (a run beside a test suite gets a third of
the trials of one beside nothing): ``--n-trials N`` gives every run the same N trials instead and
reports each run's wall time. One JSON line per run is appended to
``results/samplers.rows.jsonl``: a rerun skips the runs it holds, so a killed benchmark resumes. ``--jobs 2``
runs two at once (one worker each; the latency gate pauses the other's training while one measures).

``results/samplers.md`` then ranks the samplers by the hypervolume of each run's complete trials in
(accuracy ↑, latency ↓), mean and spread over seeds, all runs against one reference point (accuracy 0,
1.1 × the slowest latency of any run). Where ``results/groundtruth.rows.jsonl`` holds a trial's network
(same arch hash), the hypervolume of those networks with their ground-truth accuracy is given too, with
how many of the run's networks it covers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import yaml
from scipy import stats

from blocknas.blocks import ArchConfig
from blocknas.search.ablation import paired_difference
from blocknas.search.report import hypervolume_2d, is_feasible
from blocknas.search.study import ARCH_ATTR, DUPLICATE_OF_ATTR, MAX_TRIALS, load_study_config, trial_counts
from blocknas.search.tracking import open_storage

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SAMPLERS = ("tpe", "nsga2", "random", "gp")
REFERENCE_LATENCY_FACTOR = 1.1


def git_commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=ROOT).returncode != 0
    return (head.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def run_key(row: dict[str, Any]) -> tuple[str, str, int, str]:
    return row["config"], row["sampler"], int(row["seed"]), budget_of(row)


def budget_of(row: dict[str, Any]) -> str:
    """``30 trials`` (equal trials) or ``360 s`` (equal wall time)."""
    return f"{row['n_trials']} trials" if row.get("n_trials") else f"{float(row['timeout_s']):g} s"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` (none if it is missing); a malformed line is reported and skipped."""
    rows = []
    if path.is_file():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            try:
                row = json.loads(line)
                run_key(row)
                rows.append(row)
            except (ValueError, KeyError, TypeError) as exc:
                print(f"{path}:{n}: skipped, not a run row ({exc})", file=sys.stderr)
    return rows


def run_one(
    config_path: Path, sampler: str, seed: int, timeout_s: float | None, n_trials: int | None, work: Path
) -> dict[str, Any]:
    """One study with ``sampler`` and ``seed`` for ``n_trials`` trials or ``timeout_s`` seconds, in a fresh folder."""
    config = load_study_config(config_path)
    name = f"{config.name}-{sampler}-s{seed}"
    folder = work / name
    shutil.rmtree(folder, ignore_errors=True)  # a run killed before its row was written starts again
    folder.mkdir(parents=True)
    plain = config.to_dict()
    plain.update(
        name=name,
        space=config.space_path(),
        sampler=sampler,
        seed=seed,
        n_trials=n_trials or MAX_TRIALS,
        timeout_s=None if n_trials else timeout_s,
    )
    plain.update(storage=None, tracking_uri=None, runs_dir="runs", export_dir="discovered")
    (folder / "study.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))
    command = [sys.executable, "-m", "blocknas.search.cli", "search", "--config", "study.yaml", "--parallel", "1"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--no-progress"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wall = time.perf_counter() - start
    (folder / "output.txt").write_text(done.stdout)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    study = optuna.load_study(study_name=name, storage=open_storage(str(folder / "runs" / "optuna.journal")))
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values and is_feasible(t)
    ]
    return {
        "config": _shown(config_path),
        "sampler": sampler,
        "seed": seed,
        "timeout_s": None if n_trials else timeout_s,
        "n_trials": n_trials,
        "wall_s": wall,
        "trials": trial_counts(study)[0],
        "points": [
            {
                "trial": t.number,
                "arch_hash": ArchConfig.from_dict(t.user_attrs[ARCH_ATTR]).short_hash(),
                "accuracy": float(t.values[0]),
                "latency_ms": float(t.values[1]),
                "duplicate_of": t.user_attrs.get(DUPLICATE_OF_ATTR),
            }
            for t in complete
        ],
        "commit": git_commit(),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
    }


def _versus(values: list[float], baseline: list[float]) -> str:
    """Mean difference from the baseline's runs with a Welch 95 % interval (unpaired: seeds share nothing but baselines)."""
    if len(values) < 2 or len(baseline) < 2:
        return "—"
    test = stats.ttest_ind(values, baseline, equal_var=False)
    low, high = test.confidence_interval(0.95)
    return f"{statistics.fmean(values) - statistics.fmean(baseline):+.3g} [{low:+.3g}, {high:+.3g}]"


def _paired(runs: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> str:
    """Mean per-seed difference from the baseline's run of the same seed, with a Student-t 95 % interval.

    Runs of one seed draw the same random start-up trials (TPE and GP start with the seed's random
    draws) and ran side by side, so their hypervolumes move together; pairing removes that shared part.
    """
    diff = paired_difference({x["seed"]: x["hv"] for x in runs}, {x["seed"]: x["hv"] for x in baseline})
    if not diff.has_interval:
        return "—"
    return f"{diff.mean:+.3g} [{diff.low:+.3g}, {diff.high:+.3g}]"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def ground_truth(path: Path) -> dict[str, float]:
    """Arch hash → ground-truth accuracy (final EMA validation accuracy, mean over its seeds)."""
    by_hash: dict[str, list[float]] = defaultdict(list)
    for row in read_truth_rows(path):
        by_hash[row["arch_hash"]].append(float(row["val_acc_curve"][-1]))
    return {h: statistics.fmean(v) for h, v in by_hash.items()}


def read_truth_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                if row.get("arch_hash") and row.get("val_acc_curve"):
                    rows.append(row)
            except ValueError:
                continue  # a line being written by a running collector
    return rows


def report(rows: list[dict[str, Any]], truth: dict[str, float], *, truth_path: Path) -> str:
    """The Markdown table: hypervolume per sampler over seeds, by the runs' own scores and by ground truth."""
    if not rows:
        return "# Samplers at an equal budget\n\nNo runs yet.\n"
    slowest = max((p["latency_ms"] for r in rows for p in r["points"]), default=0.0)
    reference = (0.0, REFERENCE_LATENCY_FACTOR * slowest)
    per_sampler: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        own = [(p["accuracy"], p["latency_ms"]) for p in r["points"]]
        known = [(truth[p["arch_hash"]], p["latency_ms"]) for p in r["points"] if p["arch_hash"] in truth]
        per_sampler[r["sampler"]].append(
            {
                "seed": r["seed"],
                "hv": hypervolume_2d(own, reference),
                "hv_truth": hypervolume_2d(known, reference) if known else None,
                "covered": len({p["arch_hash"] for p in r["points"] if p["arch_hash"] in truth}),
                "networks": len({p["arch_hash"] for p in r["points"]}),
                "trials": r["trials"],
                "wall_s": r["wall_s"],
            }
        )
    configs = sorted({r["config"] for r in rows})
    budgets = sorted({budget_of(r) for r in rows})
    commits = sorted({r["commit"] for r in rows})
    lines = [
        f"# Samplers at an equal budget ({', '.join(budgets)} per run)",
        "",
        f"`python benchmarks/samplers.py`: config {', '.join(f'`{c}`' for c in configs)}, "
        f"{', '.join(budgets)} per run, one worker per run; commits "
        f"{', '.join(f'`{c}`' for c in commits)}; {len(rows)} runs. Hypervolume of each run's complete trials "
        f"in (accuracy ↑, latency ↓), reference point accuracy 0 and {reference[1]:.4g} ms "
        f"({REFERENCE_LATENCY_FACTOR} × the slowest latency of any run), in accuracy × ms.",
        "",
        "| sampler | seeds | trials per run (mean) | wall s per run (mean) | hypervolume mean ± sd | min – max "
        "| Δ vs tpe [95 % CI, Welch] | Δ vs tpe, paired by seed [95 % CI] "
        "| ground-truth hypervolume mean (networks covered) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ranked = sorted(per_sampler.items(), key=lambda kv: -statistics.fmean(x["hv"] for x in kv[1]))
    for sampler, runs in ranked:
        hvs = [x["hv"] for x in runs]
        sd = statistics.stdev(hvs) if len(hvs) > 1 else 0.0
        truths = [x["hv_truth"] for x in runs if x["hv_truth"] is not None]
        covered = f"{sum(x['covered'] for x in runs)} of {sum(x['networks'] for x in runs)}"
        truth_text = f"{statistics.fmean(truths):.4g} ({covered})" if truths else f"— ({covered})"
        lines.append(
            f"| {sampler} | {len(runs)} | {statistics.fmean(x['trials'] for x in runs):.1f} | "
            f"{statistics.fmean(x['wall_s'] for x in runs):.0f} | "
            f"{statistics.fmean(hvs):.4g} ± {sd:.2g} | {min(hvs):.4g} – {max(hvs):.4g} | "
            f"{_versus(hvs, [x['hv'] for x in per_sampler.get('tpe', [])]) if sampler != 'tpe' else '—'} | "
            f"{_paired(runs, per_sampler.get('tpe', [])) if sampler != 'tpe' else '—'} | "
            f"{truth_text} |"
        )
    lines += ["", "Per run (sampler, seed: hypervolume; ground truth):", ""]
    for sampler, runs in ranked:
        cells = ", ".join(
            f"s{x['seed']}: {x['hv']:.4g}" + (f"; {x['hv_truth']:.4g}" if x["hv_truth"] is not None else "")
            for x in sorted(runs, key=lambda x: x["seed"])
        )
        lines.append(f"- {sampler}: {cells}")
    lines += [
        "",
        f"Ground truth: `{_shown(truth_path)}` ({len(truth)} networks, final EMA accuracy of full training); "
        "its hypervolume uses only a run's networks that table holds, with the run's own latencies.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"), help="study YAML")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLERS, default=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per sampler (default 5)")
    parser.add_argument("--timeout-s", type=float, default=360.0, help="wall time of each run's trials (default 360)")
    parser.add_argument(
        "--n-trials", type=int, default=None, help="equal trials instead of equal wall time (e.g. the study's 30)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--rows", default=str(RESULTS / "samplers.rows.jsonl"), help="the runs' JSON lines")
    parser.add_argument("--out", default=str(RESULTS / "samplers.md"), help="the Markdown table")
    parser.add_argument("--groundtruth", default=str(RESULTS / "groundtruth.rows.jsonl"), help="read only")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench-samplers"), help="the runs' folders")
    parser.add_argument("--report-only", action="store_true", help="only write the table from the rows")
    args = parser.parse_args(argv)
    rows_path, config_path = Path(args.rows), Path(args.config).resolve()
    budget = budget_of({"n_trials": args.n_trials, "timeout_s": args.timeout_s})
    rows_path.parent.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        done = {run_key(r) for r in read_rows(rows_path)}
        todo = [
            (sampler, seed)
            for seed in range(args.seeds)
            for sampler in args.samplers
            if (_shown(config_path), sampler, seed, budget) not in done
        ]
        print(f"{len(todo)} runs to do of {args.seeds * len(args.samplers)} ({budget} each)", flush=True)
        lock = threading.Lock()

        def job(sampler: str, seed: int) -> None:
            row = run_one(config_path, sampler, seed, args.timeout_s, args.n_trials, Path(args.workdir))
            with lock, rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{sampler} seed {seed}: {row['trials']} trials, {len(row['points'])} complete", flush=True)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for future in [pool.submit(job, sampler, seed) for sampler, seed in todo]:
                future.result()
    rows = [r for r in read_rows(rows_path) if r["config"] == _shown(config_path) and budget_of(r) == budget]
    text = report(rows, ground_truth(Path(args.groundtruth)), truth_path=Path(args.groundtruth))
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
