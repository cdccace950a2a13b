#!/usr/bin/env python
"""Ground truth for the search: networks trained the way users train a discovered config.

Every network of the default study's space (``mobile32``) that a user could reuse is trained with
``blocknas train``'s recipe (augmentation, EMA, cosine; ``configs/train/default.yaml``) on
``--train-images`` Fashion-MNIST training images for ``--epochs`` epochs and validated after each
epoch on the 10,000 official test images. Beside it, each candidate *cheap estimate* of that
accuracy is computed for the same network: the default study's own trial score, variants of the
brief recipe at about the same cost, the training speed estimate, EMA weights, the parameter
count, MACs and every zero-cost proxy. One JSON line per network and seed in
``results/groundtruth.rows.jsonl``; ``table`` then scores every estimate against the table.

    python benchmarks/groundtruth.py collect &      # two cores: the same command twice
    python benchmarks/groundtruth.py collect
    python benchmarks/groundtruth.py latency        # once, on a quiet machine: results/groundtruth.latency.json
    python benchmarks/groundtruth.py table          # results/groundtruth.md, .json
    python benchmarks/groundtruth.py collect --n-random 120 ...   # grow it: finished rows are kept

The job list is fixed by its seeds (presets, then uniform samples of the space within the default
study's budget, a second seed for some), so every process and every resume agrees on it. A process
takes the next job whose (arch_hash, seed) has no row and no live claim (a claim file beside the
rows, :class:`~blocknas.search.tracking.claims.FileClaims`, taken over from a dead process), so any
number of processes on a shared folder split the work and a killed one resumes where it stopped.
``--shard K --shards N`` splits the list statically instead (machines without a shared folder).

A row's ``latency_ms`` is measured while the row's process shares the machine with other trainers,
so one graph can read 0.08 ms in one row and 0.24 ms in another. ``latency`` measures every network
of the table again in one process on an otherwise idle machine (``--rounds`` passes, round robin,
the median kept); ``table`` then uses those latencies for τ at equal latency, and says which it used.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import timm
import torch
import yaml
from scipy import stats

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ArchConfig, resolve_arch
from blocknas.search.ablation import load_ablation_config, make_plan, scale_widths
from blocknas.search.data import DataConfig, load_data
from blocknas.search.latency import measure_latency
from blocknas.search.study import StudyConfig, load_study_config
from blocknas.search.tracking.claims import FileClaims
from blocknas.search.training import (
    AugmentConfig,
    EmaConfig,
    FullTrainConfig,
    FullTrainer,
    list_proxies,
    load_train_config,
    proxy_batch,
    score_proxies,
    seed_everything,
    training_threads,
)
from blocknas.search.training.estimators import (
    fit_ranker,
    matched_tau,
    rank_agreement,
    tau_difference,
    training_speed_estimate,
)
from blocknas.spaces import SearchSpace

RESULTS = Path(__file__).resolve().parent / "results"
# The seed question's four blocks, widths matched on parameters (the ablation's own plan): at the
# ground-truth budget beside its brief-budget answer in results/seed_blocks.md.
SEED_QUESTION = Path(__file__).resolve().parent.parent / "configs" / "ablations" / "seed_blocks.yaml"
SEED_QUESTION_SEEDS = (0, 1, 2)
# The same four blocks at matched latency: the widths the brief-budget ablation (seed_blocks_latency.yaml) chose.
SEED_QUESTION_LATENCY = RESULTS / "seed_blocks" / "latency" / "variants.csv"
ROWS = RESULTS / "groundtruth.rows.jsonl"
QUIET_LATENCY = RESULTS / "groundtruth.latency.json"
REQUIRED = (
    "arch_hash",
    "arch",
    "seed",
    "params",
    "macs",
    "latency_ms",
    "val_acc_curve",
    "train_loss_curve",
    "estimates",
)
PRESETS = (
    "blocknet_standard",
    "blocknet_separable",
    "blocknet_reversed",
    "blocknet_inverted_residual",
    "blocknet_mobile",
)
# Estimates that need their own training run, and how each differs from the default study's brief recipe.
BRIEF_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "images4k_1ep": {"data": {"max_train_samples": 4000}, "train": {"epochs": 1}},
    "constant_lr": {"train": {"schedule": "constant", "warmup_epochs": 0.0}},
    "res16_4k": {"data": {"max_train_samples": 4000}, "input_size": (16, 16)},
    "half_a": {"train": {"epochs": 1}},
    "half_b": {"train": {"epochs": 1}, "seed_offset": 1000},
}


class RowError(ValueError):
    """A row of the table is malformed; the message names the row."""


@dataclass(frozen=True)
class Job:
    """One network and seed to train; ``source`` says where the architecture came from."""

    arch: ArchConfig
    seed: int
    source: str

    @property
    def key(self) -> tuple[str, int]:
        return self.arch.short_hash(), self.seed

    @property
    def claim_key(self) -> str:
        """The key a process claims while it trains this job (a file name in the claims folder)."""
        return f"{self.arch.short_hash()}-seed{self.seed}"


def seed_question_jobs() -> list[Job]:
    """The seed question's variants (standard, separable, reversed, inverted residual at matched params), each seed."""
    ablation = load_ablation_config(SEED_QUESTION)
    plan = make_plan(ablation, ablation.base_arch())
    return [Job(v.arch, seed, f"seed_blocks:{v.name}") for seed in SEED_QUESTION_SEEDS for v in plan]


def latency_matched_jobs(variants_csv: Path = SEED_QUESTION_LATENCY) -> list[Job]:
    """The seed question's variants at matched latency, each seed: the widths the brief-budget ablation chose.

    Matching on latency measures this machine, so the plan is not made again here: each variant is the base
    skeleton with its block, scaled by the width multiplier recorded in ``variants_csv``, and must hash to the
    architecture recorded there.

    Raises:
        ValueError: a rebuilt variant does not hash to the recorded architecture.
    """
    base = load_ablation_config(SEED_QUESTION).base_arch().to_dict()
    jobs = []
    with variants_csv.open(newline="") as f:
        for variant in csv.DictReader(f):
            plain = {**base, "stages": [{**s, "block": variant["block"]} for s in base["stages"]]}
            arch = scale_widths(ArchConfig.from_dict(plain), float(variant["width_multiplier"]))
            if arch.short_hash() != variant["arch_hash"]:
                raise ValueError(
                    f"{variants_csv}: {variant['variant']} rebuilds as {arch.short_hash()}, not {variant['arch_hash']}"
                )
            jobs.append((arch, variant["variant"]))
    return [Job(arch, seed, f"seed_blocks_latency:{name}") for seed in SEED_QUESTION_SEEDS for arch, name in jobs]


def jobs(config: StudyConfig, n_random: int, second_seed: int, front_dir: Path | None) -> list[Job]:
    """Every job, in a fixed order: presets, the study's front, uniform samples; then a second seed of the first ones."""
    space = SearchSpace.load(config.space_path())
    limits = config.constraints.active()
    first = [Job(resolve_arch(name), 0, f"preset:{name}") for name in PRESETS]
    if front_dir is not None and front_dir.is_dir():
        first += [Job(ArchConfig.from_yaml(p), 0, f"front:{p.stem}") for p in sorted(front_dir.glob("*.yaml"))]
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    randoms: list[Job] = []
    while len(randoms) < n_random:
        arch = space.sample(sampler.ask())
        cost = arch.cost()
        if cost.params <= limits.get("params", float("inf")) and cost.macs <= limits.get("macs", float("inf")):
            randoms.append(Job(arch, 0, f"random:{len(randoms)}"))
    again = [dataclasses.replace(j, seed=1) for j in randoms[:second_seed]]
    # The second seeds come early enough to finish in a short run: after the presets, the seed
    # question and 25 samples; then the seed question at matched latency.
    ordered = first + seed_question_jobs() + randoms[:25] + again + latency_matched_jobs() + randoms[25:]
    unique: dict[tuple[str, int], Job] = {}
    for job in ordered:
        unique.setdefault(job.key, job)
    return list(unique.values())


def read_rows(path: Path, *, epochs: int | None = None) -> list[dict[str, Any]]:
    """The table's rows, each checked: every required key, curves of one value per epoch.

    Raises:
        RowError: a line that is not JSON, misses a key, has a curve of the wrong length or repeats an
            (arch_hash, seed) of an earlier line (named by line).
    """
    if not path.exists():
        return []
    rows, seen = [], {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RowError(f"{where}: not a JSON object ({exc})") from None
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise RowError(f"{where} ({row.get('arch_hash', '?')}): missing {', '.join(missing)}")
        want = epochs if epochs is not None else row.get("budget", {}).get("epochs")
        for key in ("val_acc_curve", "train_loss_curve"):
            curve = row[key]
            if not isinstance(curve, list) or (want is not None and len(curve) != want):
                raise RowError(
                    f"{where} ({row['arch_hash']}): {key} has {len(curve) if isinstance(curve, list) else curve!r} "
                    f"values, expected one per epoch ({want})"
                )
        key = (row["arch_hash"], row["seed"])
        if key in seen:
            raise RowError(f"{where} ({row['arch_hash']}): seed {row['seed']} again (first at line {seen[key]})")
        seen[key] = number
        rows.append(row)
    return rows


def finished(path: Path, epochs: int) -> set[tuple[str, int]]:
    """The (arch_hash, seed) of every row in the table."""
    return {(r["arch_hash"], r["seed"]) for r in read_rows(path, epochs=epochs)}


def append_row(row: dict[str, Any], path: Path) -> None:
    """One line, one ``write`` on an O_APPEND descriptor: two shards appending never interleave."""
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _train(
    arch: ArchConfig, data: DataConfig, train: Any, seed: int, *, augment: bool, validate: tuple[int, ...] | None = None
) -> list[dict[str, float]]:
    """:func:`train_model` for a blocknet architecture."""
    split = load_data(data, input_size=arch.input_size, in_chans=arch.in_chans)
    seed_everything(seed)
    model = timm.create_model("blocknet", arch=arch, num_classes=split.num_classes)
    return train_model(model, split, data, train, seed, augment=augment, validate=validate, arch=arch.to_dict())


def train_model(
    model: torch.nn.Module,
    split: Any,
    data: DataConfig,
    train: Any,
    seed: int,
    *,
    augment: bool,
    validate: tuple[int, ...] | None = None,
    arch: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """``blocknas train``'s trainer and EMA (no files, no tracking) on ``split``; one record per epoch.

    Each record holds the epoch's mean training loss; the epochs in ``validate`` (default: all) also
    the EMA weights' top-1 (``ema_val_accuracy``) and the raw weights' (``val_accuracy``, the last one only
    when every epoch is validated: the truth needs only the EMA curve, and validation costs a third of training).
    Seed the model's initialisation before building it; ``seed`` fixes the data order and augmentation.
    """
    config = FullTrainConfig(
        arch=arch,
        data=data,
        train=train,
        augment=AugmentConfig() if augment else AugmentConfig(crop_padding=0, hflip=False),
        ema=EmaConfig(enabled=True, decay=0.998),
        seed=seed,
        tracking=False,
    )
    trainer = FullTrainer(model, split, config)
    every = validate is None
    history = []
    with training_threads(train):
        for epoch in range(train.epochs):
            loss, _, _ = trainer.train_epoch(epoch)
            record = {"train_loss": loss}
            last = epoch == train.epochs - 1
            if every or epoch in (validate or ()):
                record["ema_val_accuracy"] = trainer.validate(trainer.inference_model)[1]
            if (not every and epoch in (validate or ())) or (every and last):
                record["val_accuracy"] = trainer.validate(trainer.model)[1]
            history.append(record)
    return history


def brief_estimates(job: Job, study: StudyConfig, variants: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Each variant's estimate of ``job``'s accuracy, and the wall seconds it took."""
    estimates, seconds = {}, {}
    for name in variants:
        change = BRIEF_VARIANTS[name]
        arch = job.arch.replace(input_size=change["input_size"]) if "input_size" in change else job.arch
        data = dataclasses.replace(study.data, **change.get("data", {}))
        train = dataclasses.replace(study.train, **change.get("train", {}))
        start = time.perf_counter()
        last = train.epochs - 1
        history = _train(arch, data, train, job.seed + change.get("seed_offset", 0), augment=False, validate=(0, last))
        seconds[name] = time.perf_counter() - start
        estimates[name] = history[-1]["val_accuracy"]  # the raw weights: what a trial scores today
        estimates[f"{name}_ema"] = history[-1]["ema_val_accuracy"]
        estimates[f"{name}_tse"] = training_speed_estimate([h["train_loss"] for h in history])
        if name == "default":
            estimates["default_epoch1"] = history[0]["val_accuracy"]
    if "half_a" in estimates and "half_b" in estimates:
        estimates["two_seeds_half"] = (estimates["half_a"] + estimates["half_b"]) / 2
        seconds["two_seeds_half"] = seconds["half_a"] + seconds["half_b"]
    return estimates, seconds


def run_job(job: Job, study: StudyConfig, truth: FullTrainConfig, commit: str) -> dict[str, Any]:
    """Measure, score and train one network; its row."""
    arch = job.arch
    cost = arch.cost()
    seed_everything(job.seed)
    model = timm.create_model("blocknet", arch=arch)
    target = dataclasses.replace(study.latency, threads=1, runtime="onnxruntime")
    latency = measure_latency(model, (arch.in_chans, *arch.input_size), target)
    data = load_data(study.data, input_size=arch.input_size, in_chans=arch.in_chans)
    proxies = score_proxies(model, proxy_batch(data, seed=job.seed), list_proxies(), seed=job.seed)
    variants = list(BRIEF_VARIANTS) if job.seed == 0 else ["default"]
    estimates, seconds = brief_estimates(job, study, variants)
    estimates.update(params=float(cost.params), macs=float(cost.macs))
    estimates.update({f"proxy.{k}": v.value for k, v in proxies.items()})
    seconds.update({f"proxy.{k}": v.ms / 1000 for k, v in proxies.items()})
    start = time.perf_counter()
    history = _train(arch, truth.data, truth.train, job.seed, augment=True)
    return {
        "arch_hash": arch.short_hash(),
        "arch": arch.to_yaml(),
        "seed": job.seed,
        "source": job.source,
        "params": cost.params,
        "macs": cost.macs,
        "latency_ms": latency.p50_ms,
        "latency_fingerprint": latency.fingerprint_id,
        "val_acc_curve": [h["ema_val_accuracy"] for h in history],
        "raw_val_acc": history[-1]["val_accuracy"],
        "train_loss_curve": [h["train_loss"] for h in history],
        "estimates": estimates,
        "estimate_seconds": seconds,
        "truth_seconds": time.perf_counter() - start,
        "budget": {
            "train_images": truth.data.max_train_samples,
            "val_images": "all official test images",
            "epochs": truth.train.epochs,
        },
        "commit": commit,
        "host": platform.node(),
        "torch": torch.__version__,
    }


def truth_config(epochs: int, train_images: int) -> FullTrainConfig:
    """``configs/train/default.yaml`` on Fashion-MNIST: ``train_images`` images, all 10,000 test images."""
    base = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "train" / "default.yaml")
    data = DataConfig(name="fashion_mnist", max_train_samples=train_images)
    return dataclasses.replace(base, data=data, train=dataclasses.replace(base.train, epochs=epochs, threads=1))


def collect(args: argparse.Namespace) -> int:
    study = load_study_config(args.config)
    truth = truth_config(args.epochs, args.train_images)
    torch.set_num_threads(1)
    commit = git_commit()
    mine = [
        j
        for i, j in enumerate(jobs(study, args.n_random, args.second_seed, args.front))
        if i % args.shards == args.shard
    ]
    claims = FileClaims(args.rows.with_name(args.rows.stem + ".claims"))
    for n, job in enumerate(mine, 1):
        if job.key in finished(args.rows, args.epochs) or not claims.claim(job.claim_key, note=job.source).held:
            continue  # trained, or being trained by another process
        try:
            if job.key in finished(args.rows, args.epochs):  # finished between the look and the claim
                continue
            start = time.perf_counter()
            row = run_job(job, study, truth, commit)
            append_row(row, args.rows)
        finally:
            claims.release(job.claim_key)
        print(
            f"shard {args.shard} job {n}/{len(mine)} {job.source} seed {job.seed}: truth "
            f"{row['val_acc_curve'][-1]:.4f}, default {row['estimates']['default']:.4f}, "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )
    return 0


# -- analysis ---------------------------------------------------------------------------------------------


def arch_features(row: dict[str, Any]) -> list[float]:
    """Architecture features a ranker can use: per-block stage counts, depth, widths, kernels, strides, cost."""
    arch = yaml.safe_load(row["arch"])
    stages = arch["stages"]
    blocks = ("standard", "separable", "reversed", "inverted_residual")
    counts = [sum(s["depth"] for s in stages if s["block"] == b) for b in blocks]
    return [
        *counts,
        float(sum(s["depth"] for s in stages)),
        float(np.log(stages[-1]["out_chs"])),
        float(np.mean([s.get("kernel_size", 3) for s in stages])),
        float(np.mean([s.get("expand_ratio", 1.0) for s in stages])),
        float(np.log(row["params"])),
        float(np.log(row["macs"])),
    ]


def zero_cost_features(row: dict[str, Any]) -> list[float]:
    """Architecture features and every proxy (log of its magnitude: they span orders of magnitude)."""
    proxies = [v for k, v in sorted(row["estimates"].items()) if k.startswith("proxy.")]
    return [*arch_features(row), *(float(np.log1p(abs(v))) for v in proxies)]


def analyse(
    rows: list[dict[str, Any]], fraction: float, n_boot: int, *, latency_file: Path = QUIET_LATENCY
) -> dict[str, Any]:
    """Every estimate's agreement with the truth (final EMA accuracy, seed 0), costs and noise floors."""
    first = [r for r in rows if r["seed"] == 0]
    truth = [r["val_acc_curve"][-1] for r in first]
    names = sorted(set.intersection(*(set(r["estimates"]) for r in first)))
    estimates = {name: [r["estimates"][name] for r in first] for name in names}
    brief = estimates["default"]
    estimates["ranker(zero-cost)"] = list(fit_ranker(np.array([zero_cost_features(r) for r in first]), brief))
    with_brief = [[*zero_cost_features(r), r["estimates"]["default_epoch1"]] for r in first]
    estimates["ranker(zero-cost+brief)"] = list(fit_ranker(np.array(with_brief), brief))
    estimates["ranker+default"] = [
        (a + b) / 2 for a, b in zip(_zscores(estimates["ranker(zero-cost+brief)"]), _zscores(brief))
    ]
    per_network_s = {name: [_cost(r, name) for r in first] for name in estimates}
    latency, latency_source = latencies(first, latency_file)
    own = [r["latency_ms"] for r in first]
    table = {}
    for name, values in estimates.items():
        agreement = rank_agreement(values, truth, fraction=fraction, n_boot=n_boot)
        costs = [s for s in per_network_s[name] if s is not None]
        table[name] = {
            **dataclasses.asdict(agreement),
            "tau_at_equal_latency": dataclasses.asdict(matched_tau(values, truth, latency, n_boot=n_boot)[0]),
            "tau_minus_default": dataclasses.asdict(tau_difference(values, brief, truth, n_boot=n_boot)),
            "tau_minus_params": dataclasses.asdict(tau_difference(values, estimates["params"], truth, n_boot=n_boot)),
            "seconds_median": statistics.median(costs) if costs else None,
        }
        if latency != own:  # the rows' own latencies, for comparison with the quiet pass's
            table[name]["tau_at_equal_own_latency"] = dataclasses.asdict(
                matched_tau(values, truth, own, n_boot=n_boot)[0]
            )
    noise = noise_floors(rows, n_boot)
    with_own = {n: {**e, "tau_at_equal_latency": e.get("tau_at_equal_own_latency")} for n, e in table.items()}
    return {
        "n_networks": len(first),
        "n_rows": len(rows),
        "estimators": table,
        "equal_latency_pairs": matched_tau(truth, truth, latency, n_boot=1)[1],
        "latency_source": latency_source,
        "noise": noise,
        "rungs": rung_agreement(first, n_boot),
        "truth_range": [min(truth), max(truth)],
        "truth_sd": statistics.pstdev(truth),
        "truth_seconds_median": statistics.median(r["truth_seconds"] for r in rows),
        "commits": sorted({r.get("commit", "unknown") for r in rows}),
        "seed_question": seed_question(rows),
        "choice": choose_score(table, len(first), noise["n"]),
        "choice_with_own_latency": (choose_score(with_own, len(first), noise["n"]) if latency != own else None),
    }


# What each estimate is called in a study's ``score:`` option, where a trial can already compute it.
SCORE_OPTIONS = {"default": "accuracy", "default_ema": "ema_accuracy"}
RULE_FAILURES = {
    "cheap_enough": "cost (more wall time per network than `default`)",
    "ranks_better": "the paired difference (its interval reaches 0 or below)",
    "not_just_size": "τ at equal latency (below `default`'s)",
}
# The goal for the default study's trial score.
GOAL_TAU, GOAL_OVERLAP = 0.6, 0.5
# The table the rule decides on: networks at seed 0, networks with a second seed.
FULL_NETWORKS, FULL_TWO_SEEDS = 60, 15


def choose_score(estimators: dict[str, dict[str, Any]], n_networks: int, n_two_seeds: int) -> dict[str, Any]:
    """The default score by the rule fixed before the table was read (docs/explanations/proxies.md).

    An estimate replaces ``default`` only if (1) its median cost per network is at most ``default``'s,
    (2) its paired τ − τ(default) interval lies above 0 and (3) its τ at equal latency is at least
    ``default``'s. Of several, the highest paired difference wins; with none, ``default`` stays.
    The pick is ``final`` only on the full table (:data:`FULL_NETWORKS`, :data:`FULL_TWO_SEEDS`).
    """
    base = estimators["default"]
    verdicts = {}
    for name, e in estimators.items():
        if name == "default":
            continue
        cost_ok = e["seconds_median"] is not None and e["seconds_median"] <= base["seconds_median"]
        verdicts[name] = {
            "cheap_enough": cost_ok,
            "ranks_better": e["tau_minus_default"]["low"] > 0,
            "not_just_size": e["tau_at_equal_latency"]["value"] >= base["tau_at_equal_latency"]["value"],
        }
    passing = [n for n, v in verdicts.items() if all(v.values())]
    winner = max(passing, key=lambda n: estimators[n]["tau_minus_default"]["value"], default="default")
    chosen = estimators[winner]
    return {
        "winner": winner,
        "score_option": SCORE_OPTIONS.get(winner),
        "passing": passing,
        "verdicts": verdicts,
        "meets_goal": chosen["tau"]["value"] >= GOAL_TAU and chosen["overlap"]["value"] >= GOAL_OVERLAP,
        "final": n_networks >= FULL_NETWORKS and n_two_seeds >= FULL_TWO_SEEDS,
        "n_networks": n_networks,
        "n_two_seeds": n_two_seeds,
    }


def render_choice(choice: dict[str, Any], estimators: dict[str, dict[str, Any]]) -> list[str]:
    """The rule's verdict as Markdown: the winner, and what kept each near miss out."""
    winner = choice["winner"]
    e = estimators[winner]
    option = f"`score: {choice['score_option']}`" if choice["score_option"] else "no `score:` option yet"
    lines = [
        "\n## The default score, by the rule fixed before the table was read\n",
        "An estimate replaces `default` only if it costs no more per network, its paired τ − τ(`default`) "
        "interval lies above 0, and its τ at equal latency is at least `default`'s "
        "(`docs/explanations/proxies.md`).\n",
        *(
            []
            if choice["final"]
            else [
                f"**Provisional**: the table holds {choice['n_networks']} networks, {choice['n_two_seeds']} with a "
                f"second seed; the rule decides at {FULL_NETWORKS} and {FULL_TWO_SEEDS}. Until then "
                "`configs/default.yaml` keeps `score: accuracy`, whatever the pick below.\n"
            ]
        ),
        f"- **{'Chosen' if choice['final'] else 'Picked so far'}: `{winner}`** ({option}): τ {e['tau']['value']:+.2f} [{e['tau']['low']:+.2f}, "
        f"{e['tau']['high']:+.2f}], top overlap {e['overlap']['value']:.0%}; the goal (τ ≥ {GOAL_TAU}, overlap ≥ "
        f"{GOAL_OVERLAP:.0%}) is {'met' if choice['meets_goal'] else 'not met'}.",
        f"- Passing all three: {', '.join(f'`{n}`' for n in choice['passing']) or 'none'}.",
    ]
    near = [n for n, v in choice["verdicts"].items() if sum(v.values()) == 2]
    for name in sorted(near, key=lambda n: -estimators[n]["tau_minus_default"]["value"]):
        failed = next(k for k, ok in choice["verdicts"][name].items() if not ok)
        lines.append(f"- `{name}` fails only on {RULE_FAILURES[failed]}.")
    return lines


def _cost(row: dict[str, Any], name: str) -> float | None:
    """Wall seconds of the run an estimate comes from (``_ema``, ``_tse`` and ``_epoch1`` ride on their run's)."""
    seconds = row.get("estimate_seconds", {})
    if name in ("params", "macs"):
        return 0.0  # analytic
    if name.startswith("ranker"):
        name = "default"  # fitted on the study's own default scores: the trials it needs are run anyway
    for suffix in ("_ema", "_tse", "_epoch1"):
        name = name.removesuffix(suffix)
    return seconds.get(name)


def _zscores(values: list[float]) -> list[float]:
    array = np.asarray(values, dtype=float)
    return list((array - array.mean()) / (array.std() or 1.0))


def noise_floors(rows: list[dict[str, Any]], n_boot: int) -> dict[str, Any]:
    """τ between two seeds of the same networks: of the truth itself, and of the default estimate."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], {})[r["arch_hash"]] = r
    both = sorted(set(by_seed.get(0, {})) & set(by_seed.get(1, {})))
    if len(both) < 3:
        return {"n": len(both)}
    a, b = by_seed[0], by_seed[1]
    out: dict[str, Any] = {"n": len(both)}
    for label, get in (("truth", lambda r: r["val_acc_curve"][-1]), ("default", lambda r: r["estimates"]["default"])):
        agreement = rank_agreement([get(a[h]) for h in both], [get(b[h]) for h in both], n_boot=n_boot)
        out[label] = dataclasses.asdict(agreement)
        out[f"{label}_abs_diff_pp"] = statistics.mean(abs(get(a[h]) - get(b[h])) * 100 for h in both)
    return out


def rung_agreement(rows: list[dict[str, Any]], n_boot: int) -> list[dict[str, Any]]:
    """Each epoch's accuracy against the final one: how early the ground-truth curve ranks networks."""
    final = [r["val_acc_curve"][-1] for r in rows]
    epochs = len(rows[0]["val_acc_curve"])
    return [
        {
            "epoch": e + 1,
            **dataclasses.asdict(rank_agreement([r["val_acc_curve"][e] for r in rows], final, n_boot=n_boot)),
        }
        for e in range(epochs - 1)
    ]


def seed_question(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed question's accuracy per block and seed at both budgets, for each matching (``params``, ``latency``):
    the ground truth from these rows, the brief budget from the ablation's own cells (``results/seed_blocks/``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_blocks import accuracies, read_cells

    plans = {
        "params": (seed_question_jobs(), ("params", "params_seeds_12_20")),
        "latency": (latency_matched_jobs(), ("latency",)),
    }
    out: dict[str, Any] = {}
    for matching, (jobs, brief_runs) in plans.items():
        level_of = {j.arch.short_hash(): j.source.rsplit("block=", 1)[1] for j in jobs}
        truth: dict[str, dict[int, float]] = {}
        for r in rows:
            if r["arch_hash"] in level_of:
                truth.setdefault(level_of[r["arch_hash"]], {})[r["seed"]] = r["val_acc_curve"][-1]
        cells = [RESULTS / "seed_blocks" / name / "cells.csv" for name in brief_runs]
        brief = accuracies(read_cells([c for c in cells if c.is_file()]))
        out[matching] = {"truth": truth, "brief": brief, "arch_hashes": level_of}
    return out


def render_seed_question(result: dict[str, Any]) -> list[str]:
    """Both budgets' tables side by side (one after the other), for each matching; Student-t intervals over
    paired seeds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_blocks import table as seed_table

    lines = []
    sources = {
        "params": "`configs/ablations/seed_blocks.yaml`'s plan",
        "latency": "`configs/ablations/seed_blocks_latency.yaml`'s widths as its brief-budget run chose them "
        "(`results/seed_blocks/latency/variants.csv`: the inverted residual stayed 9.5 % faster than the target)",
    }
    for matching, question in result["seed_question"].items():
        truth = {level: {int(k): v for k, v in by_seed.items()} for level, by_seed in question["truth"].items()}
        brief = {level: {int(k): v for k, v in by_seed.items()} for level, by_seed in question["brief"].items()}
        if not truth:
            continue
        n_seeds = max(len(by_seed) for by_seed in truth.values())
        lines += [
            f"\n## The seed question at the ground-truth budget (four blocks, widths matched on {matching})\n",
            f"{sources[matching]} (arch hashes {', '.join(f'`{h}`' for h in question['arch_hashes'])}), trained "
            f"with the ground-truth recipe, {n_seeds} seed(s) so far; the brief-budget answer is the ablation's own "
            "cells (`results/seed_blocks*.md`). Intervals: Student-t 95 % over seeds, paired by seed; with "
            f"{n_seeds} seeds an interval is {2 * stats.t.ppf(0.975, max(n_seeds - 1, 1)):.1f} standard errors wide, "
            "so read a ground-truth interval that excludes 0 as a direction, not a settled size.\n",
            "### Ground-truth budget (10 epochs, 10,000 images, augmentation, EMA)\n",
            *seed_table(truth, 0.5),
            "\n### Brief budget (2 epochs, 2,000 images: the default study's)\n",
            *seed_table(brief, 0.5),
        ]
    return lines


def beat_params_line(estimators: dict[str, dict[str, Any]]) -> str:
    """Which estimates rank better than the parameter count, paired (the proxies' and rankers' old question)."""
    better = [
        n for n, e in estimators.items() if n not in ("params", "proxy.params") and e["tau_minus_params"]["low"] > 0
    ]
    return (
        "**Better than `params`** (paired τ − τ(`params`) interval above 0): "
        + (", ".join(f"`{n}`" for n in sorted(better)) if better else "none")
        + ". The rest, every proxy and fitted ranker included, are not shown to rank better than the parameter count."
    )


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    est = result["estimators"]
    lines = [
        "# Ground truth: the default space trained the way users train a discovered config\n",
        f"`python benchmarks/groundtruth.py` (commits {', '.join(result['commits'])}); "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, one thread per network. "
        f"{result['n_networks']} networks (seed 0), {result['n_rows']} rows in `groundtruth.rows.jsonl`.\n",
        f"Truth: `configs/train/default.yaml`'s recipe (AdamW, cosine, crop+flip, EMA 0.998) for "
        f"{args.epochs} epochs on {args.train_images:,} Fashion-MNIST training images, EMA top-1 on the 10,000 "
        f"official test images after the last epoch: {result['truth_range'][0]:.4f}–{result['truth_range'][1]:.4f} "
        f"(sd {result['truth_sd'] * 100:.2f} pp), median {result['truth_seconds_median']:.0f} s a network.\n",
        f"## Estimates against the truth (bootstrap 95 % intervals over networks; top {args.fraction:.0%} overlap)\n",
        "| estimate | Kendall τ | τ − τ(`default`), paired | τ − τ(`params`), paired | τ at equal latency "
        "| Spearman ρ | top overlap | s per network (median) |",
        "|---|---|---|---|---|---|---|---:|",
    ]
    for name, e in sorted(est.items(), key=lambda item: -item[1]["tau"]["value"]):
        cost = "—" if e["seconds_median"] is None else f"{e['seconds_median']:.1f}"
        tau, diff, vs_params, partial, rho, ov = (
            e[k] for k in ("tau", "tau_minus_default", "tau_minus_params", "tau_at_equal_latency", "rho", "overlap")
        )
        lines.append(
            f"| `{name}` | {tau['value']:+.2f} [{tau['low']:+.2f}, {tau['high']:+.2f}] | "
            f"{diff['value']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}] | "
            f"{vs_params['value']:+.2f} [{vs_params['low']:+.2f}, {vs_params['high']:+.2f}] | "
            f"{partial['value']:+.2f} [{partial['low']:+.2f}, {partial['high']:+.2f}] | "
            f"{rho['value']:+.2f} [{rho['low']:+.2f}, {rho['high']:+.2f}] | "
            f"{ov['value']:.0%} [{ov['low']:.0%}, {ov['high']:.0%}] | {cost} |"
        )
    lines += [
        "",
        "Names: `default` is the default study's trial score (2,000 images, 2 epochs, raw weights); `_ema` the same "
        "run's EMA weights; `_tse` minus the sum of its per-epoch training losses (Ru et al. 2021); "
        "`images4k_1ep` 4,000 images for 1 epoch; `constant_lr` no warm-up, constant rate; `res16_4k` 16×16 inputs, "
        "4,000 images; `two_seeds_half` the mean of two 1-epoch runs (seeds 0 and 1000); `proxy.*` zero-cost "
        "proxies on the untrained network; `ranker(...)` ridge regression fitted on the networks' own `default` "
        "scores, 5-fold out-of-fold predictions (what a study could fit on its own completed trials). "
        "*τ − τ(`default`)* is the difference from the default score's τ over the same bootstrap samples "
        "(an interval above 0 says the estimate ranks better than the default score); *τ − τ(`params`)* the same "
        "against the parameter count. *τ at equal latency* is "
        f"Kendall's τ over the {result['equal_latency_pairs']} pairs of networks whose latencies are within 15 % of "
        "each other: how an estimate orders networks that a multi-objective search cannot tell apart by latency; "
        "an estimate that only tracks network size is near 0 there however high its plain τ. "
        + result.get("latency_source", ""),
        "",
        beat_params_line(est),
    ]
    noise = result["noise"]
    if noise.get("n", 0) >= 3:
        lines += [
            f"\n## Noise floor: a second seed of {noise['n']} networks\n",
            f"- truth, seed 0 vs seed 1: τ {noise['truth']['tau']['value']:+.2f} "
            f"[{noise['truth']['tau']['low']:+.2f}, {noise['truth']['tau']['high']:+.2f}], mean |Δ| "
            f"{noise['truth_abs_diff_pp']:.2f} pp;",
            f"- `default`, seed 0 vs seed 1: τ {noise['default']['tau']['value']:+.2f} "
            f"[{noise['default']['tau']['low']:+.2f}, {noise['default']['tau']['high']:+.2f}], mean |Δ| "
            f"{noise['default_abs_diff_pp']:.2f} pp.",
        ]
    lines += render_choice(result["choice"], est)
    other = result.get("choice_with_own_latency")
    if other:
        lines.append(
            f"- With the rows' own latencies (measured beside other trainers) instead of the quiet pass's, the rule "
            f"would pick `{other['winner']}` (passing all three: "
            f"{', '.join(f'`{n}`' for n in other['passing']) or 'none'})."
        )
    lines += render_seed_question(result)
    lines += ["\n## How early the ground-truth curve ranks networks (epoch k vs the last epoch)\n"]
    lines += ["| epoch | τ | top overlap |", "|---:|---|---|"]
    for r in result["rungs"]:
        lines.append(f"| {r['epoch']} | {r['tau']['value']:+.2f} [{r['tau']['low']:+.2f}, {r['tau']['high']:+.2f}] | "
                     f"{r['overlap']['value']:.0%} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def measure_round_robin(
    models: Mapping[str, Callable[[], torch.nn.Module]], input_shape: tuple[int, int, int], target: Any, rounds: int
) -> dict[str, dict[str, Any]]:
    """Each model's latency, ``rounds`` times round robin (so a burst of load touches every model alike).

    Returns, per key, the median p50 (``latency_ms``), every round's p50 and the device fingerprint.
    """
    samples: dict[str, list[float]] = {key: [] for key in models}
    fingerprints: dict[str, str] = {}
    for _ in range(rounds):
        for key, build in models.items():
            result = measure_latency(build().eval(), input_shape, target)
            samples[key].append(result.p50_ms)
            fingerprints[key] = result.fingerprint_id
    return {
        key: {"latency_ms": statistics.median(v), "samples_ms": v, "fingerprint": fingerprints[key]}
        for key, v in samples.items()
    }


def write_round_robin(
    models: Mapping[str, Callable[[], torch.nn.Module]],
    input_shape: tuple[int, int, int],
    target: Any,
    rounds: int,
    out: Path,
) -> dict[str, Any]:
    """:func:`measure_round_robin`, written to ``out`` (JSON) with the commit, host and the load before and after."""
    load_before = os.getloadavg()
    networks = measure_round_robin(models, input_shape, target, rounds)
    record = {
        "commit": git_commit(),
        "host": platform.node(),
        "rounds": rounds,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "networks": networks,
    }
    out.write_text(json.dumps(record, indent=1))
    return record


def quiet_pass(archs: Mapping[str, ArchConfig], latency: Any, rounds: int, out: Path) -> dict[str, Any]:
    """blocknet ``archs`` (one input shape) measured again in this one process, one thread on ONNX Runtime."""
    shapes = {(a.in_chans, *a.input_size) for a in archs.values()}
    if len(shapes) != 1:
        raise ValueError(f"networks of several input shapes {sorted(shapes)}; one pass needs one")
    torch.set_num_threads(1)
    factories = {h: functools.partial(timm.create_model, "blocknet", arch=a) for h, a in archs.items()}
    target = dataclasses.replace(latency, threads=1, runtime="onnxruntime")
    return write_round_robin(factories, shapes.pop(), target, rounds, out)


def remeasure_latency(args: argparse.Namespace) -> int:
    """Every network of the table measured again, in this one process, ``--rounds`` times round robin."""
    study = load_study_config(args.config)
    archs = {r["arch_hash"]: ArchConfig.from_dict(yaml.safe_load(r["arch"])) for r in read_rows(args.rows)}
    try:
        record = quiet_pass(archs, study.latency, args.rounds, args.latency)
    except ValueError as exc:
        raise RowError(f"{args.rows}: {exc}") from None
    before, after = record["load_before"][0], record["load_after"][0]
    print(f"wrote {args.latency}: {len(archs)} networks, load {before:.1f} before, {after:.1f} after")
    return 0


def latencies(rows: list[dict[str, Any]], path: Path) -> tuple[list[float], str]:
    """Each row's latency for τ at equal latency: the quiet pass's when it covers every row, else the row's own.

    Returns the latencies and a sentence saying which were used.
    """
    quiet = json.loads(path.read_text()) if path.is_file() else None
    if quiet and all(r["arch_hash"] in quiet["networks"] for r in rows):
        load = quiet["load_before"][0]
        return [quiet["networks"][r["arch_hash"]]["latency_ms"] for r in rows], (
            f"Latencies: one quiet pass over every network (`groundtruth.py latency`, commit {quiet['commit']}, "
            f"median of {quiet['rounds']} round-robin measurements, 1-min load {load:.1f} before it)."
        )
    return [r["latency_ms"] for r in rows], (
        "Latencies: each row's own, measured beside other trainers (no quiet pass covers every network: "
        "run `groundtruth.py latency` on an idle machine)."
    )


def table(args: argparse.Namespace) -> int:
    rows = read_rows(args.rows, epochs=args.epochs)
    if sum(r["seed"] == 0 for r in rows) < 5:
        print(f"{args.rows} holds {len(rows)} rows: run `collect` first", file=sys.stderr)
        return 2
    result = analyse(rows, args.fraction, args.n_boot, latency_file=args.latency)
    (RESULTS / "groundtruth.json").write_text(json.dumps(result, indent=1))
    out = RESULTS / "groundtruth.md"
    out.write_text(render(result, args))
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=("collect", "latency", "table"))
    parser.add_argument("--config", default="configs/default.yaml", help="the study whose space and score are judged")
    parser.add_argument("--n-random", type=int, default=60, help="uniform samples of the space")
    parser.add_argument(
        "--second-seed",
        type=int,
        default=11,
        help="this many samples also trained with seed 1 (with the seed question's 4 blocks, 15 networks with two seeds)",
    )
    parser.add_argument("--front", type=Path, default=None, help="a folder of discovered YAML files to include")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--rows", type=Path, default=ROWS, help="the table (JSON lines), shared by all shards")
    parser.add_argument("--fraction", type=float, default=0.1, help="top share for the overlap")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--latency", type=Path, default=QUIET_LATENCY, help="the quiet pass's latencies (JSON)")
    parser.add_argument("--rounds", type=int, default=5, help="`latency`: measurements of each network")
    args = parser.parse_args(argv)
    if not 0 <= args.shard < args.shards:
        parser.error(f"--shard must be in [0, --shards={args.shards})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = {"collect": collect, "latency": remeasure_latency, "table": table}
    return parts[args.part](args)


if __name__ == "__main__":
    raise SystemExit(main())
