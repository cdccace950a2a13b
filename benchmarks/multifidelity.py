#!/usr/bin/env python
"""Does Pareto-aware successive halving (``pruner: pareto_asha``) find a better accuracy-vs-latency front
in the same wall-clock time than training every candidate to the full budget?

Three arms, each a real ``run_search`` with the same wall-clock budget (``timeout_s``) per run:

1. ``tpe``: TPE, every trial trained to the full budget (``pruner: none``);
2. ``tpe+asha``: TPE with ``pruner: pareto_asha``;
3. ``random+asha``: random sampling with ``pruner: pareto_asha``.

Each arm runs ``--seeds`` times; the arms alternate (seed 0: 1, 2, 3; seed 1: 2, 3, 1; ...) so a
slow phase of a shared machine does not fall on one arm. Measured, per run: the hypervolume of
the front of its complete (full-budget) trials against time, the time it takes to reach 95 % of
the final hypervolume of one long reference run (TPE, full budget, ``--reference-s``), and the
rank correlation (Spearman, Kendall) between the accuracy at the first rung and at the full
budget over the trials of the full-budget runs (which train every trial through both).

The hypervolume's reference point is accuracy 0 and 1.1 × the slowest complete trial of all
runs; it is written in the results. Pruned trials never enter a front.

    python benchmarks/multifidelity.py                       # defaults: Fashion-MNIST if present, 10 min/run
    python benchmarks/multifidelity.py --config configs/default.yaml --epochs 4 --eta 2   # the default study's recipe
    python benchmarks/multifidelity.py --data digits --space tiny --budget-s 60 --seeds 1 --reference-s 120

Results: ``benchmarks/results/multifidelity.md`` (``--out`` for another file).
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataConfig, load_data
from blocknas.search.report import hypervolume_2d
from blocknas.search.study import StudyConfig, load_study_config, run_search, rung_accuracy_attr
from blocknas.search.tracking import RUN_ID_ATTR

log = logging.getLogger("multifidelity")
RESULTS = Path(__file__).resolve().parent / "results"
ARMS = {"tpe": ("tpe", "none"), "tpe+asha": ("tpe", "pareto_asha"), "random+asha": ("random", "pareto_asha")}
REFERENCE_LATENCY_FACTOR = 1.1
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)  # fractions of the budget the hypervolume table reports


@dataclass
class Run:
    """One search of one arm: its complete trials (time since start, accuracy, latency) and counts."""

    arm: str
    seed: int
    budget_s: float
    complete: list[tuple[float, float, float]] = field(default_factory=list)
    started: int = 0
    pruned: int = 0
    early_vs_full: list[tuple[float, float]] = field(default_factory=list)  # (rung-0 accuracy, full accuracy)

    def hypervolume_at(self, t: float, reference: tuple[float, float]) -> float:
        return hypervolume_2d([(acc, lat) for s, acc, lat in self.complete if s <= t], reference)

    def time_to(self, target: float, reference: tuple[float, float]) -> float | None:
        """Seconds until the front's hypervolume first reaches ``target`` (None: not within the budget)."""
        for s, _, _ in sorted(self.complete):
            if s > self.budget_s:
                return None
            if self.hypervolume_at(s, reference) >= target:
                return s
        return None


def default_data() -> str:
    """``fashion_mnist`` when its files are on this machine (never downloaded here), else ``digits``."""
    try:
        load_data(
            parse(DataConfig, {"name": "fashion_mnist", "max_train_samples": 64}), input_size=(16, 16), in_chans=1
        )
    except Exception as exc:  # not a known dataset in this version, or its files are missing
        log.info("fashion_mnist not available (%s); using digits", exc)
        return "digits"
    return "fashion_mnist"


def study_config(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> StudyConfig:
    """One arm's study: ``--config``'s space, data, recipe and latency target (or the flags' own), full budget ``--epochs``."""
    sampler, pruner = ARMS[arm]
    name = f"mf-{arm.replace('+', '-')}-s{seed}"
    if args.config:
        base = load_study_config(args.config).to_dict()
        base["train"] = {**base["train"], "epochs": args.epochs}
    else:
        data: dict[str, object] = {"name": args.data}
        if args.max_train_samples:
            data["max_train_samples"] = args.max_train_samples
        if args.max_val_samples:
            data["max_val_samples"] = args.max_val_samples
        base = {
            "space": args.space,
            "data": data,
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "threads": 1},
            "latency": {"threads": 1, "time_cap_s": 0.2, "min_repeats": 10, "warmup": 3},
        }
    return parse(
        StudyConfig,
        {
            **base,
            "name": name,
            "sampler": sampler,
            "pruner": pruner,
            "pruning": {"min_epochs": args.min_epochs, "reduction_factor": args.eta} if pruner == "pareto_asha" else {},
            "seed": seed,
            "n_trials": 100_000,
            "timeout_s": budget_s,
            "baselines": [],
            "storage": str(folder / f"{name}.journal"),
            "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
            "runs_dir": str(folder / "runs"),
            "export_dir": str(folder / "exported"),
        },
    )


def run_arm(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> Run:
    config = study_config(args, arm, seed, budget_s, folder)
    log.info("arm %s, seed %d: %.0f s", arm, seed, budget_s)
    start = time.time()
    result = run_search(config, progress=False)
    trials = result.study.get_trials(deepcopy=False)
    run = Run(arm, seed, budget_s, started=len(trials), pruned=sum(t.state == TrialState.PRUNED for t in trials))
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values and t.datetime_complete is not None:
            run.complete.append((t.datetime_complete.timestamp() - start, float(t.values[0]), float(t.values[1])))
    if ARMS[arm][1] == "none":
        run.early_vs_full = _early_vs_full(result.tracking_uri, trials, args.min_epochs)
    return run


def _early_vs_full(tracking_uri: str, trials: list[FrozenTrial], min_epochs: int) -> list[tuple[float, float]]:
    """(accuracy after ``min_epochs`` epochs, full-budget accuracy) of every complete trial, from its MLflow curve."""
    client, pairs = MlflowClient(tracking_uri), []
    for t in trials:
        if t.state != TrialState.COMPLETE or RUN_ID_ATTR not in t.user_attrs:
            continue
        if rung_accuracy_attr(0) in t.user_attrs:
            pairs.append((float(t.user_attrs[rung_accuracy_attr(0)]), float(t.values[0])))
            continue
        curve = {m.step: m.value for m in client.get_metric_history(t.user_attrs[RUN_ID_ATTR], "epoch_val_accuracy")}
        if min_epochs - 1 in curve:
            pairs.append((curve[min_epochs - 1], float(t.values[0])))
    return pairs


def schedule(seeds: int) -> list[tuple[int, str]]:
    """(seed, arm) in the order they run: the arm order rotates by one each seed."""
    names = list(ARMS)
    return [(seed, names[(seed + i) % len(names)]) for seed in range(seeds) for i in range(len(names))]


def _fmt(value: float | None, unit: str = "") -> str:
    return "not reached" if value is None else f"{value:.0f}{unit}"


def _mean(values: list[float]) -> str:
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4g}{spread}"


def write_results(args: argparse.Namespace, runs: list[Run], reference_run: Run, out: Path, wall_s: float) -> None:
    every = [*runs, reference_run]
    slowest = max((lat for r in every for _, _, lat in r.complete), default=1.0)
    reference = (0.0, REFERENCE_LATENCY_FACTOR * slowest)
    target_hv = 0.95 * reference_run.hypervolume_at(math.inf, reference)
    lines = [
        "# Multi-fidelity: Pareto-aware successive halving vs full-budget training\n",
        f"`python benchmarks/multifidelity.py {' '.join(args.argv)}` — {platform.node()}, "
        f"{platform.processor() or platform.machine()}, optuna {optuna.__version__}; total {wall_s / 60:.1f} min.\n",
        f"- data `{args.data}` (max_train_samples {args.max_train_samples}, max_val_samples {args.max_val_samples}), space `{args.space}`, "
        f"{args.epochs} epochs full budget, batch {args.batch_size}, one thread for training and latency",
        f"- pareto_asha: min_epochs {args.min_epochs}, η = {args.eta}, min_trials_per_rung 4 (default), latency "
        "ties within the latency target's rel_precision (2 %)",
        f"- {args.budget_s:.0f} s of wall clock per run (no new trial after it; the trial running then finishes and "
        f"is not counted in the time-bounded numbers), {args.seeds} seed(s) per arm, arms alternated",
        f"- hypervolume reference point: accuracy {reference[0]}, latency {reference[1]:.4f} ms "
        f"({REFERENCE_LATENCY_FACTOR} × the slowest complete trial of all runs); the front is that of complete "
        "(full-budget) trials only",
        f"- long reference run: TPE, full budget, {args.reference_s:.0f} s: final hypervolume "
        f"{reference_run.hypervolume_at(math.inf, reference):.4g} ({len(reference_run.complete)} complete trials); "
        f"target 95 % = {target_hv:.4g}\n",
        "## Per run\n",
        "| arm | seed | trials started | complete | pruned | hypervolume at budget | time to 95 % of reference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.arm} | {r.seed} | {r.started} | {len(r.complete)} | {r.pruned} | "
            f"{r.hypervolume_at(r.budget_s, reference):.4g} | {_fmt(r.time_to(target_hv, reference), ' s')} |"
        )
    lines += ["", "## Hypervolume against time (mean ± sd over seeds)\n"]
    header = " | ".join(f"{int(c * 100)} % ({c * args.budget_s:.0f} s)" for c in CHECKPOINTS)
    lines += [f"| arm | {header} | reached 95 % |", "|---|" + "---:|" * (len(CHECKPOINTS) + 1)]
    for arm in ARMS:
        mine = [r for r in runs if r.arm == arm]
        cells = [_mean([r.hypervolume_at(c * args.budget_s, reference) for r in mine]) for c in CHECKPOINTS]
        reached = sum(r.time_to(target_hv, reference) is not None for r in mine)
        lines.append(f"| {arm} | {' | '.join(cells)} | {reached} of {len(mine)} |")
    pairs = [p for r in every if ARMS.get(r.arm, ("", "none"))[1] == "none" for p in r.early_vs_full]
    lines += ["", f"## Rung 1 ({args.min_epochs} epoch(s)) vs full budget ({args.epochs} epochs)\n"]
    if len(pairs) >= 3:
        early, full = zip(*pairs)
        rho, tau = stats.spearmanr(early, full).statistic, stats.kendalltau(early, full).statistic
        lines.append(
            f"Over {len(pairs)} complete trials of the full-budget runs (reference run included): Spearman ρ = "
            f"{rho:.3f}, Kendall τ = {tau:.3f} between the validation accuracy after the first rung and at the "
            "full budget."
        )
    else:
        lines.append(f"Too few full-budget trials ({len(pairs)}) for a rank correlation.")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    log.info("results written to %s", out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        help="take space, data, training recipe and latency target from this study YAML (e.g. configs/default.yaml)",
    )
    parser.add_argument("--data", help="dataset name (default fashion_mnist when present, else digits)")
    parser.add_argument("--max-train-samples", type=int, default=6000)
    parser.add_argument("--max-val-samples", type=int, default=2000)
    parser.add_argument("--space", default="tiny", help="search space (default tiny: 16x16 grey)")
    parser.add_argument("--epochs", type=int, default=9, help="full training budget")
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--budget-s", type=float, default=600.0, help="wall clock per run")
    parser.add_argument("--seeds", type=int, default=3, help="runs per arm")
    parser.add_argument("--reference-s", type=float, help="wall clock of the long reference run (default 4 × budget)")
    parser.add_argument("--out", type=Path, default=RESULTS / "multifidelity.md")
    parser.add_argument("--workdir", type=Path, help="keep studies here (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    if args.config:
        config = load_study_config(args.config)
        args.data, args.space = config.data.name, config.space
        args.max_train_samples, args.max_val_samples = config.data.max_train_samples, config.data.max_val_samples
        args.batch_size = config.train.batch_size
    args.data = args.data or default_data()
    args.reference_s = args.reference_s or 4 * args.budget_s
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="multifidelity-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            study_config(args, "tpe+asha", 0, args.budget_s, folder)  # bad settings fail before any run
        except ConfigError as exc:
            parser.error(str(exc))
        runs = [run_arm(args, arm, seed, args.budget_s, folder) for seed, arm in schedule(args.seeds)]
        reference_run = run_arm(args, "tpe", 1000, args.reference_s, folder)
        reference_run.arm = "reference"
    write_results(args, runs, reference_run, args.out, time.monotonic() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
