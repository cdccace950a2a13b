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

``--target plain`` drops the reference run: each seed's goal is then 95 % of that seed's plain
(``tpe``, full budget) run's final hypervolume, and the results add the pruned runs' time to it over
the plain run's (the pruner pays where that ratio is ≤ 0.5). Its reference point is then
``asha_replay.py``'s (1 pp below the worst complete trial's accuracy, not 0, so that the goal asks
for accuracy and not only for some network near the fastest latency), and the results add that
replay on the plain run's own per-epoch curves: what the replay predicts for this recipe, beside
what the real pruned run measured.

Every run is one worker (``parallel: 1``), and its clock is its trials' own time: the sum of the
durations of the trials before it, in trial order. So a run killed and resumed (``--workdir``) loses
nothing but the trial it cut short, and continues with what is left of its budget. With ``--workdir``
the same command on two cores splits the runs between the processes by claims (a run is taken by
one process at a time); the process that finishes the last run writes the results.
``--latency-pass`` then measures every complete trial's network again, in that one process, 3 times
round robin, and the hypervolumes use those medians instead of the latencies measured beside the
other process's training.

    python benchmarks/multifidelity.py                       # defaults: Fashion-MNIST if present, 10 min/run
    python benchmarks/multifidelity.py --config configs/default.yaml --epochs 4 --eta 2   # the default study's recipe
    python benchmarks/multifidelity.py --data digits --space tiny --budget-s 60 --seeds 1 --reference-s 120
    # the ground-truth budget, two arms, on two cores (run the line twice):
    python benchmarks/multifidelity.py --config configs/default.yaml --max-train-samples 10000 \
        --max-val-samples 10000 --epochs 10 --min-epochs 2 --eta 2 --arms tpe,tpe+asha --seeds 1 \
        --target plain --budget-s 4800 --latency-pass --workdir benchmarks/results/multifidelity_gt \
        --out benchmarks/results/multifidelity_groundtruth.md

Results: ``benchmarks/results/multifidelity.md`` (``--out`` for another file), and beside it the same name
``.json`` with every run's complete trials (trial time, accuracy, latency, arch hash).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from blocknas.blocks import ArchConfig, ConfigError, parse
from blocknas.search.data import DataConfig, load_data
from blocknas.search.report import hypervolume_2d
from blocknas.search.study import ARCH_ATTR, StudyConfig, load_study_config, run_search
from blocknas.search.study.pruning import PruningConfig
from blocknas.search.tracking import RUN_ID_ATTR
from blocknas.search.tracking.claims import FileClaims
from blocknas.search.tracking.storage import StorageError, load_study

log = logging.getLogger("multifidelity")
RESULTS = Path(__file__).resolve().parent / "results"
ARMS = {"tpe": ("tpe", "none"), "tpe+asha": ("tpe", "pareto_asha"), "random+asha": ("random", "pareto_asha")}
PLAIN_ARM = "tpe"
REFERENCE_SEED = 1000
REFERENCE_LATENCY_FACTOR = 1.1
CHECKPOINTS = (0.25, 0.5, 0.75, 1.0)  # fractions of the budget the hypervolume table reports
DONE_ATTR = "multifidelity.done_s"  # set on a run's study when its budget is spent: the trials' time then
LATENCY_ROUNDS = 3
REPLAY_ORDERS = 200


@dataclass
class Run:
    """One search of one arm: its complete trials (trial time before it, accuracy, latency, arch hash) and counts."""

    arm: str
    seed: int
    budget_s: float
    complete: list[tuple[float, float, float, str]] = field(default_factory=list)
    started: int = 0
    pruned: int = 0
    early_vs_full: list[tuple[float, float]] = field(default_factory=list)  # (rung-0 accuracy, full accuracy)
    curves: list[tuple[list[float], float, str]] = field(default_factory=list)  # full-budget: curve, s/epoch, hash
    archs: dict[str, dict[str, Any]] = field(default_factory=dict)  # arch hash -> arch, complete trials

    def points(self, t: float, latency: dict[str, float] | None = None) -> list[tuple[float, float]]:
        """(accuracy, latency) of the trials complete by ``t``; ``latency`` replaces the trials' own by hash."""
        return [(acc, (latency or {}).get(h, lat)) for s, acc, lat, h in self.complete if s <= t]

    def hypervolume_at(
        self, t: float, reference: tuple[float, float], latency: dict[str, float] | None = None
    ) -> float:
        return hypervolume_2d(self.points(t, latency), reference)

    def time_to(
        self, target: float, reference: tuple[float, float], latency: dict[str, float] | None = None
    ) -> float | None:
        """Trial seconds until the front's hypervolume first reaches ``target`` (None: not within the budget)."""
        for s, *_ in sorted(self.complete):
            if s > self.budget_s:
                return None
            if self.hypervolume_at(s, reference, latency) >= target:
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


def run_name(arm: str, seed: int) -> str:
    return f"mf-{arm.replace('+', '-')}-s{seed}"


def study_config(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> StudyConfig:
    """One arm's study: ``--config``'s space, data, recipe and latency target (or the flags' own), full budget
    ``--epochs``; the flags ``--max-train-samples``, ``--max-val-samples`` and ``--batch-size`` win over the config."""
    sampler, pruner = ARMS[arm]
    name = run_name(arm, seed)
    if args.config:
        base = load_study_config(args.config).to_dict()
        base["train"] = {**base["train"], "epochs": args.epochs, "batch_size": args.batch_size}
        base["data"] = {
            **base["data"],
            "max_train_samples": args.max_train_samples,
            "max_val_samples": args.max_val_samples,
        }
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
            "parallel": 1,
            "baselines": [],
            "storage": str(folder / f"{name}.journal"),
            "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}",
            "runs_dir": str(folder / "runs"),
            "export_dir": str(folder / "exported"),
        },
    )


def trial_seconds(trial: FrozenTrial) -> float:
    """How long ``trial`` ran (0 for one cut short by a kill: it has no end)."""
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def spent_s(study: optuna.Study) -> float:
    """The trial time a run has used: the sum of its trials' durations."""
    return sum(trial_seconds(t) for t in study.get_trials(deepcopy=False))


def load_run(config: StudyConfig) -> optuna.Study | None:
    """The run's study, if a process has started it."""
    try:
        return load_study(config.name, config.storage_url)
    except (FileNotFoundError, StorageError):
        return None


def run_arm(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> None:
    """Run (or resume) one arm's search until its trials have used ``budget_s``; mark its study done."""
    config = study_config(args, arm, seed, budget_s, folder)
    study = load_run(config)
    spent = spent_s(study) if study else 0.0
    log.info("arm %s, seed %d: %.0f s (%.0f s spent before)", arm, seed, budget_s, spent)
    if spent < budget_s:
        run_search(dataclasses.replace(config, timeout_s=budget_s - spent), progress=False)
    study = load_run(config)
    assert study is not None
    study.set_user_attr(DONE_ATTR, spent_s(study))


def read_run(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> Run:
    """A finished run, read from its study and MLflow store; the clock is trial time in trial order."""
    config = study_config(args, arm, seed, budget_s, folder)
    study = load_run(config)
    assert study is not None, f"{config.name} has not run"
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    run = Run(arm, seed, budget_s, started=len(trials), pruned=sum(t.state == TrialState.PRUNED for t in trials))
    client = MlflowClient(config.tracking_uri or "")
    clock = 0.0
    for t in trials:
        clock += trial_seconds(t)
        if t.state == TrialState.COMPLETE and t.values:
            arch = t.user_attrs.get(ARCH_ATTR) or {}
            key = ArchConfig.from_dict(arch).short_hash() if arch else f"trial{t.number}"
            run.complete.append((clock, float(t.values[0]), float(t.values[1]), key))
            if arch:
                run.archs[key] = arch
            if ARMS[arm][1] == "none" and RUN_ID_ATTR in t.user_attrs:
                history = client.get_metric_history(t.user_attrs[RUN_ID_ATTR], "epoch_val_accuracy")
                curve = [m.value for m in sorted(history, key=lambda m: m.step)]
                if len(curve) == args.epochs:
                    run.curves.append((curve, trial_seconds(t) / args.epochs, key))
    run.early_vs_full = [(curve[args.min_epochs - 1], curve[-1]) for curve, _, _ in run.curves]
    return run


def schedule(seeds: int, arms: list[str] | None = None) -> list[tuple[int, str]]:
    """(seed, arm) in the order they run: the arm order rotates by one each seed."""
    names = arms or list(ARMS)
    return [(seed, names[(seed + i) % len(names)]) for seed in range(seeds) for i in range(len(names))]


def planned_runs(args: argparse.Namespace) -> list[tuple[str, int, float]]:
    """Every (arm, seed, budget) of this benchmark, the reference run last when there is one."""
    runs = [(arm, seed, args.budget_s) for seed, arm in schedule(args.seeds, args.arms)]
    if args.target == "reference":
        runs.append((PLAIN_ARM, REFERENCE_SEED, args.reference_s))
    return runs


def is_done(args: argparse.Namespace, arm: str, seed: int, budget_s: float, folder: Path) -> bool:
    config = study_config(args, arm, seed, budget_s, folder)
    study = load_run(config)
    return study is not None and DONE_ATTR in study.user_attrs


def latency_pass(runs: list[Run], config: StudyConfig, out: Path) -> dict[str, float]:
    """Every complete trial's network measured again in this process, round robin (cached in ``out``)."""
    if out.is_file():
        return {h: n["latency_ms"] for h, n in json.loads(out.read_text())["networks"].items()}
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import groundtruth

    archs = {h: ArchConfig.from_dict(a) for r in runs for h, a in r.archs.items()}
    record = groundtruth.quiet_pass(archs, config.latency, LATENCY_ROUNDS, out)
    log.info("latency pass: %d networks, 1-min load %.1f before", len(archs), record["load_before"][0])
    return {h: n["latency_ms"] for h, n in record["networks"].items()}


def _fmt(value: float | None, unit: str = "") -> str:
    return "not reached" if value is None else f"{value:.0f}{unit}"


def _mean(values: list[float]) -> str:
    if not values:
        return "—"
    spread = f" ± {statistics.stdev(values):.3g}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4g}{spread}"


def targets(
    args: argparse.Namespace,
    runs: list[Run],
    reference_run: Run | None,
    reference: tuple[float, float],
    latency: dict[str, float] | None,
) -> dict[int, float]:
    """Each seed's hypervolume goal: 95 % of the reference run's, or of that seed's plain run's (``--target plain``)."""
    if reference_run is not None:
        goal = 0.95 * reference_run.hypervolume_at(math.inf, reference, latency)
        return {r.seed: goal for r in runs}
    plain = {r.seed: r for r in runs if r.arm == PLAIN_ARM}
    return {seed: 0.95 * p.hypervolume_at(math.inf, reference, latency) for seed, p in plain.items()}


def write_results(
    args: argparse.Namespace,
    runs: list[Run],
    reference_run: Run | None,
    out: Path,
    latency: dict[str, float] | None = None,
) -> None:
    every = [*runs, *([reference_run] if reference_run else [])]
    slowest = max(((latency or {}).get(h, lat) for r in every for _, _, lat, h in r.complete), default=1.0)
    worst = min((acc for r in every for _, acc, _, _ in r.complete), default=0.01)
    reference = (0.0 if reference_run else worst - 0.01, REFERENCE_LATENCY_FACTOR * slowest)
    goals = targets(args, runs, reference_run, reference, latency)
    wall_s = sum(max((s for s, *_ in r.complete), default=0.0) for r in every)
    lines = [
        "# Multi-fidelity: Pareto-aware successive halving vs full-budget training\n",
        f"`python benchmarks/multifidelity.py {' '.join(args.argv)}` — {platform.node()}, "
        f"{platform.processor() or platform.machine()}, optuna {optuna.__version__}; "
        f"{wall_s / 3600:.2f} h of trial time in all.\n",
        f"- data `{args.data}` (max_train_samples {args.max_train_samples}, max_val_samples {args.max_val_samples}), space `{args.space}`, "
        f"{args.epochs} epochs full budget, batch {args.batch_size}, one worker and one thread for training and latency",
        f"- pareto_asha: min_epochs {args.min_epochs}, η = {args.eta}, min_trials_per_rung 4 (default), latency "
        "ties within the latency target's rel_precision (2 %)",
        f"- {args.budget_s:.0f} s of trial time per run (the sum of its trials' durations, in trial order: no new "
        "trial after it; the trial running then finishes and is not counted in the time-bounded numbers), "
        f"{args.seeds} seed(s) per arm, arms alternated",
        f"- hypervolume reference point: accuracy {reference[0]:.4f}"
        f"{'' if reference_run else ' (1 pp below the worst complete trial, as asha_replay.py)'}, latency "
        f"{reference[1]:.4f} ms ({REFERENCE_LATENCY_FACTOR} × the slowest complete trial of all runs); the front "
        "is that of complete (full-budget) trials only",
        "- latencies: "
        + (
            f"one quiet pass over every complete trial's network after the runs (median of {LATENCY_ROUNDS} "
            "round-robin measurements, one process)"
            if latency
            else "each trial's own, measured beside whatever else ran"
        ),
    ]
    if reference_run is not None:
        lines.append(
            f"- long reference run: TPE, full budget, {args.reference_s:.0f} s: final hypervolume "
            f"{reference_run.hypervolume_at(math.inf, reference, latency):.4g} ({len(reference_run.complete)} "
            f"complete trials); target 95 % = {next(iter(goals.values()), 0):.4g}\n"
        )
    else:
        lines.append(
            "- target: 95 % of the same seed's plain (`tpe`, full budget) run's final hypervolume; "
            "ratio = a run's time to it over the plain run's (the pruner pays where it is ≤ 0.5)\n"
        )
    lines += [
        "## Per run\n",
        "| arm | seed | trials started | complete | pruned | hypervolume at budget | time to 95 % of target | ratio to plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    plain_time = {
        r.seed: r.time_to(goals[r.seed], reference, latency) for r in runs if r.arm == PLAIN_ARM and r.seed in goals
    }
    for r in runs:
        took = r.time_to(goals[r.seed], reference, latency) if r.seed in goals else None
        base = plain_time.get(r.seed)
        ratio = f"{took / base:.2f}" if took is not None and base else "—"
        lines.append(
            f"| {r.arm} | {r.seed} | {r.started} | {len(r.complete)} | {r.pruned} | "
            f"{r.hypervolume_at(r.budget_s, reference, latency):.4g} | {_fmt(took, ' s')} | {ratio} |"
        )
    lines += ["", "## Hypervolume against time (mean ± sd over seeds)\n"]
    header = " | ".join(f"{int(c * 100)} % ({c * args.budget_s:.0f} s)" for c in CHECKPOINTS)
    lines += [f"| arm | {header} | reached 95 % |", "|---|" + "---:|" * (len(CHECKPOINTS) + 1)]
    for arm in args.arms:
        mine = [r for r in runs if r.arm == arm]
        cells = [_mean([r.hypervolume_at(c * args.budget_s, reference, latency) for r in mine]) for c in CHECKPOINTS]
        reached = sum(r.seed in goals and r.time_to(goals[r.seed], reference, latency) is not None for r in mine)
        lines.append(f"| {arm} | {' | '.join(cells)} | {reached} of {len(mine)} |")
    pairs = [p for r in every if ARMS[r.arm][1] == "none" for p in r.early_vs_full]
    lines += ["", f"## Rung 1 ({args.min_epochs} epoch(s)) vs full budget ({args.epochs} epochs)\n"]
    if len(pairs) >= 3:
        early, full = zip(*pairs, strict=True)
        rho, tau = stats.spearmanr(early, full).statistic, stats.kendalltau(early, full).statistic
        lines.append(
            f"Over {len(pairs)} complete trials of the full-budget runs"
            f"{' (reference run included)' if reference_run else ''}: Spearman ρ = "
            f"{rho:.3f}, Kendall τ = {tau:.3f} between the validation accuracy after the first rung and at the "
            "full budget."
        )
    else:
        lines.append(f"Too few full-budget trials ({len(pairs)}) for a rank correlation.")
    if reference_run is None:
        lines += replay_lines(args, runs, latency)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    raw = {"latency_pass": latency, "runs": [dataclasses.asdict(r) for r in every]}
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    log.info("results written to %s (every run's trials: %s)", out, out.with_suffix(".json").name)


def replay_lines(args: argparse.Namespace, runs: list[Run], latency: dict[str, float] | None) -> list[str]:
    """``asha_replay.py`` on each plain run's own per-epoch curves: the ratio it predicts for this recipe."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import asha_replay

    pruning = PruningConfig(min_epochs=args.min_epochs, reduction_factor=args.eta)
    lines = [
        "",
        f"## Replay on the plain run's own curves ({REPLAY_ORDERS} random orders, the same pruning settings)\n",
        "| seed | networks | pruned arm reached goal | ratio median [2.5 %, 97.5 %] | orders with ratio ≤ 0.5 |",
        "|---:|---:|---:|---|---:|",
    ]
    for r in runs:
        if r.arm != PLAIN_ARM or len(r.curves) < 2:
            continue
        networks = [
            asha_replay.Network(tuple(curve), (latency or {}).get(h, lat), epoch_s)
            for (curve, epoch_s, h), lat in zip(r.curves, _latencies(r), strict=True)
        ]
        out = asha_replay.replay(networks, pruning, REPLAY_ORDERS)
        lo, hi = out["ratio_interval"]
        lines.append(
            f"| {r.seed} | {len(networks)} | {out['reached']} of {REPLAY_ORDERS} | {out['ratio_median']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] | {out['pays_share']:.0%} |"
        )
    return lines


def _latencies(run: Run) -> list[float]:
    """Each curve's network's own measured latency (the trial's), in the order of ``run.curves``."""
    own = {h: lat for _, _, lat, h in run.complete}
    return [own[h] for _, _, h in run.curves]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config",
        help="take space, data, training recipe and latency target from this study YAML (e.g. configs/default.yaml)",
    )
    parser.add_argument("--data", help="dataset name (default fashion_mnist when present, else digits)")
    parser.add_argument("--max-train-samples", type=int, help="default: --config's, else 6000")
    parser.add_argument("--max-val-samples", type=int, help="default: --config's, else 2000")
    parser.add_argument("--space", default="tiny", help="search space (default tiny: 16x16 grey)")
    parser.add_argument("--epochs", type=int, default=9, help="full training budget")
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--batch-size", type=int, help="default: --config's, else 64")
    parser.add_argument("--budget-s", type=float, default=600.0, help="trial time per run")
    parser.add_argument("--seeds", type=int, default=3, help="runs per arm")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument(
        "--target",
        choices=("reference", "plain"),
        default="reference",
        help="95 %% of a long reference run's hypervolume (default), or of each seed's plain tpe run's",
    )
    parser.add_argument("--reference-s", type=float, help="trial time of the long reference run (default 4 × budget)")
    parser.add_argument(
        "--latency-pass", action="store_true", help="measure the complete trials' latencies again, quietly"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "multifidelity.md")
    parser.add_argument("--workdir", type=Path, help="keep studies here: resumable, and shared by processes")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown or not args.arms:
        parser.error(f"--arms: unknown {unknown or 'none given'}; choose from {', '.join(ARMS)}")
    if args.target == "plain" and PLAIN_ARM not in args.arms:
        parser.error(f"--target plain needs the {PLAIN_ARM} arm in --arms")
    if args.config:
        config = load_study_config(args.config)
        args.data, args.space = config.data.name, config.space
        args.max_train_samples = args.max_train_samples or config.data.max_train_samples
        args.max_val_samples = args.max_val_samples or config.data.max_val_samples
        args.batch_size = args.batch_size or config.train.batch_size
    else:
        args.max_train_samples = args.max_train_samples or 6000
        args.max_val_samples = args.max_val_samples or 2000
        args.batch_size = args.batch_size or 64
    args.data = args.data or default_data()
    args.reference_s = args.reference_s or 4 * args.budget_s
    try:
        study_config(args, args.arms[0], 0, args.budget_s, Path(tempfile.gettempdir()))  # bad settings fail first
    except ConfigError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="multifidelity-") as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        claims = FileClaims(folder / "claims")
        plan = planned_runs(args)
        for arm, seed, budget in plan:
            if is_done(args, arm, seed, budget, folder):
                continue
            key = run_name(arm, seed)
            if not claims.claim(key, note="multifidelity").held:
                continue  # another process runs it
            try:
                if not is_done(args, arm, seed, budget, folder):
                    run_arm(args, arm, seed, budget, folder)
            finally:
                claims.release(key)
        left = [run_name(a, s) for a, s, b in plan if not is_done(args, a, s, b, folder)]
        if left:
            log.info("%s still running in another process: it writes the results", ", ".join(left))
            return 0
        runs = [read_run(args, arm, seed, budget, folder) for arm, seed, budget in plan]
        reference_run = None
        if args.target == "reference":
            reference_run = runs.pop()
            reference_run.arm = PLAIN_ARM
        latency = None
        if args.latency_pass:
            config = study_config(args, PLAIN_ARM, 0, args.budget_s, folder)
            every = [*runs, *([reference_run] if reference_run else [])]
            latency = latency_pass(every, config, folder / "latency_pass.json")
        write_results(args, runs, reference_run, args.out, latency)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
