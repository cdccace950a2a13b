#!/usr/bin/env python
"""Fidelity of the search: does brief-training accuracy rank architectures as longer training does?

Retrains every Pareto-front architecture of a finished study, plus as many random
non-front ones, with the study's own recipe (same trainer, data, seed and schedule shape)
for ``--factor`` times the epochs, and reports Kendall's tau and Spearman's rho between the
brief accuracy the search saw and the longer-training accuracy, and whether the front
stays non-dominated on (longer accuracy up, latency down). A second brief run with
another seed gives the noise floor of the brief accuracy itself.

    python benchmarks/fidelity.py --config configs/default.yaml    # after `make search`

Results: ``benchmarks/results/fidelity.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import timm
import torch
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ArchConfig, StageConfig
from blocknas.search.data import load_data
from blocknas.search.study import ARCH_ATTR, BASELINE_ATTR, StudyConfig, front_trials, load_study_config
from blocknas.search.tracking import mask_url, open_storage
from blocknas.search.training import TrainConfig, seed_everything, train_briefly

log = logging.getLogger("fidelity")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One retrained architecture."""

    trial: int
    on_front: bool
    label: str
    latency_ms: float
    params: int
    brief: float  # the accuracy the search recorded
    long: float = float("nan")
    brief_rerun: float = float("nan")  # brief budget, same seed: does the search's number reproduce?
    brief_again: float = float("nan")  # brief budget, another seed: the noise floor
    long_seconds: float = 0.0


def load_finished_study(config: StudyConfig) -> optuna.Study:
    """The study named in ``config`` from its storage (it must exist and have complete trials)."""
    storage = open_storage(config.storage_url)
    try:
        study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        sys.exit(
            f"no study {config.name!r} in {mask_url(config.storage_url)} (studies there: {', '.join(names) or 'none'}); run `make search` first"
        )
    return study


def select(study: optuna.Study, seed: int, max_front: int | None = None) -> list[Row]:
    """Every distinct front architecture (at most ``max_front``), then as many random distinct complete non-front ones.

    A space can propose one architecture in several trials; each is retrained once (its
    first trial), so duplicates do not inflate the rank correlations. With ``max_front``,
    the kept front architectures are spread evenly over the front's latency range.
    """
    seen: set[str] = set()
    front = _distinct(front_trials(study), seen)
    if max_front is not None and len(front) > max_front:
        by_latency = sorted(front, key=lambda t: float(t.user_attrs["latency_ms"]))
        keep = {round(i * (len(by_latency) - 1) / max(max_front - 1, 1)) for i in range(max_front)}
        front = [t for i, t in enumerate(by_latency) if i in keep]
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    others = _distinct([t for t in complete if ARCH_ATTR in t.user_attrs], seen)
    chosen = sorted(random.Random(seed).sample(others, min(len(front), len(others))), key=lambda t: t.number)
    return [_row(t, on_front=True) for t in front] + [_row(t, on_front=False) for t in chosen]


def _distinct(trials: list[FrozenTrial], seen: set[str]) -> list[FrozenTrial]:
    """The first trial of each architecture whose hash is not in ``seen`` (which is updated)."""
    out = []
    for trial in trials:
        key = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR]).short_hash()
        if key not in seen:
            seen.add(key)
            out.append(trial)
    return out


def _row(trial: FrozenTrial, on_front: bool) -> Row:
    arch = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
    label = trial.user_attrs.get(BASELINE_ATTR) or " / ".join(_stage_label(s) for s in arch.stages)
    return Row(
        trial.number, on_front, label, float(trial.user_attrs["latency_ms"]), arch.cost().params, float(trial.values[0])
    )


def _stage_label(stage: StageConfig) -> str:
    """``block:width x depth k<kernel>`` plus ``e<expand>``/``se<ratio>`` where they are not the default."""
    label = f"{stage.block}:{stage.out_chs}x{stage.depth}k{stage.kernel_size}"
    label += f"e{stage.expand_ratio:g}" if stage.expand_ratio != 1 else ""
    return label + (f"se{stage.se_ratio:g}" if stage.se_ratio else "")


def accuracy(arch: ArchConfig, config: StudyConfig, train: TrainConfig, seed: int) -> tuple[float, float]:
    """Validation top-1 and seconds of the search's recipe (``Objective``'s seeding) under ``train``."""
    data = load_data(config.data, input_size=arch.input_size, in_chans=arch.in_chans)
    seed_everything(seed)
    model = timm.create_model("blocknet", arch=arch)
    result = train_briefly(model, data, train, seed=seed)
    return result.val_accuracy, result.train_seconds


def dominators(rows: list[Row], i: int) -> list[int]:
    """Trials whose longer-training accuracy and latency are both at least as good as row ``i``'s, one better."""
    me = rows[i]
    return [
        r.trial
        for r in rows
        if r is not me
        and r.long >= me.long
        and r.latency_ms <= me.latency_ms
        and (r.long > me.long or r.latency_ms < me.latency_ms)
    ]


def correlations(a: list[float], b: list[float]) -> dict[str, float]:
    tau = stats.kendalltau(a, b)
    rho = stats.spearmanr(a, b)
    return {
        "kendall_tau": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
        "spearman_rho": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
    }


def summarize(rows: list[Row]) -> dict[str, object]:
    front = [i for i, r in enumerate(rows) if r.on_front]
    dominated = {rows[i].trial: dominators(rows, i) for i in front if dominators(rows, i)}
    summary: dict[str, object] = {
        "n": len(rows),
        "n_front": len(front),
        "brief_vs_long": correlations([r.brief for r in rows], [r.long for r in rows]),
        "brief_vs_brief_other_seed": correlations([r.brief for r in rows], [r.brief_again for r in rows]),
        "front_still_non_dominated": len(front) - len(dominated),
        "brief_rerun_max_abs_diff": max(abs(r.brief_rerun - r.brief) for r in rows),
        "front_dominated_by": dominated,
    }
    if len(front) >= 3:
        summary["brief_vs_long_front_only"] = correlations(
            [rows[i].brief for i in front], [rows[i].long for i in front]
        )
    return summary


def render(rows: list[Row], summary: dict, config: StudyConfig, long_epochs: int, note: str) -> str:
    bl, noise = summary["brief_vs_long"], summary["brief_vs_brief_other_seed"]
    lines = [
        "# Fidelity of the search: brief vs longer training",
        "",
        f"Study `{config.name}` ({mask_url(config.storage_url)}), space `{config.space}`, data `{config.data.name}`; "
        f"brief budget {config.train.epochs} epoch(s) as in the search, longer budget {long_epochs} epochs "
        f"(same trainer, recipe, data split and seed {config.seed}; one run per architecture).",
        "",
        note,
        "",
        "## Result",
        "",
        f"- **Kendall τ = {bl['kendall_tau']:.3f}** (p = {bl['kendall_p']:.3g}) and **Spearman ρ = {bl['spearman_rho']:.3f}** "
        f"(p = {bl['spearman_p']:.3g}) between brief and {long_epochs}-epoch accuracy over {summary['n']} architectures "
        f"({summary['n_front']} on the front, {summary['n'] - summary['n_front']} random non-front).",
        f"- Noise floor: the brief accuracy against itself with another seed gives τ = {noise['kendall_tau']:.3f}, "
        f"ρ = {noise['spearman_rho']:.3f}.",
        "- Reproduction: the brief training rerun with the search's seed differs from the accuracy the search "
        f"recorded by at most {summary['brief_rerun_max_abs_diff']:.4f}.",
    ]
    if "brief_vs_long_front_only" in summary:
        fo = summary["brief_vs_long_front_only"]
        lines.append(f"- Within the front only: τ = {fo['kendall_tau']:.3f}, ρ = {fo['spearman_rho']:.3f}.")
    dominated = summary["front_dominated_by"]
    lines.append(
        f"- Front after longer training: {summary['front_still_non_dominated']} of {summary['n_front']} front architectures "
        f"stay non-dominated among the retrained set (latency as measured in the search)"
        + (
            ": dominated are " + "; ".join(f"trial {t} (by {', '.join(map(str, by))})" for t, by in dominated.items())
            if dominated
            else "."
        )
    )
    lines += [
        "",
        "## Architectures",
        "",
        f"| trial | front | latency ms | params | brief acc (search) | brief (rerun) | brief (seed+1) | {long_epochs}-epoch acc | blocks |",
        "|---:|:---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: r.latency_ms):
        lines.append(
            f"| {r.trial} | {'yes' if r.on_front else ''} | {r.latency_ms:.3f} | {r.params:,} | {r.brief:.4f} | "
            f"{r.brief_rerun:.4f} | {r.brief_again:.4f} | {r.long:.4f} | {r.label} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", default="configs/default.yaml", help="the study's config (storage, data, training budget)"
    )
    parser.add_argument("--study-name", help="override the study name")
    parser.add_argument("--storage", help="override the Optuna storage")
    parser.add_argument("--factor", type=int, default=5, help="longer budget = factor x the search's epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of non-front trials")
    parser.add_argument(
        "--max-front", type=int, help="retrain at most this many front architectures (and as many non-front ones)"
    )
    parser.add_argument("--out", default=str(RESULTS / "fidelity.md"))
    parser.add_argument("--note", default="", help="a line about the setup, written into the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # as the search's workers; also keeps runs bitwise reproducible

    config = load_study_config(args.config).with_overrides(name=args.study_name, storage=args.storage)
    study = load_finished_study(config)
    rows = select(study, args.seed, args.max_front)
    if len(rows) < 3:
        sys.exit(f"study {config.name!r} has {len(rows)} usable trials; fidelity needs at least 3")
    long_train = dataclasses.replace(config.train, epochs=config.train.epochs * args.factor, time_budget_s=None)
    start = time.perf_counter()
    for i, row in enumerate(rows):
        arch = ArchConfig.from_dict(study.trials[row.trial].user_attrs[ARCH_ATTR])
        row.long, row.long_seconds = accuracy(arch, config, long_train, config.seed)
        row.brief_rerun, _ = accuracy(arch, config, config.train, config.seed)
        row.brief_again, _ = accuracy(arch, config, config.train, config.seed + 1)
        log.info(
            "%d/%d trial %d: brief %.4f (rerun %.4f, seed+1 %.4f), long %.4f",
            i + 1,
            len(rows),
            row.trial,
            row.brief,
            row.brief_rerun,
            row.brief_again,
            row.long,
        )
    summary = summarize(rows)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    note = (
        f"{len(study.trials)} trials in the study; retraining took {time.perf_counter() - start:.0f} s on "
        f"{platform.machine()} with 1 torch thread (commit {commit or 'unknown'}). {args.note}".strip()
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows, summary, config, long_train.epochs, note))
    out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1)
    )
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
