#!/usr/bin/env python
"""Training throughput against the limit: the brief trainer vs a hand-written PyTorch loop.

On a fixed set of ``mobile32`` networks (``blocknet_separable`` and random samples of the
default study's space within its constraints, Optuna's RandomSampler seed 0 as
``groundtruth.py``'s ``jobs()``), with the default study's data and ``train:`` settings (batch
32, AdamW, cosine, label smoothing, 1 thread), each arm times training steps (forward, backward,
optimizer and scheduler step; no data loading, no validation) in images per second:

* ``baseline``: ``BriefTrainer.train_epoch``, the trainer's real loop (latency-gate step,
  divergence check, running loss and accuracy), with the config as a trial gets it;
* ``trainer_nchw``: the same with ``channels_last: false``;
* ``plain``: model(x) → cross-entropy → zero_grad → backward → step → scheduler step;
* ``channels_last``, ``batch64``, ``batch128``, ``compile`` (``torch.compile``, default mode;
  compile time reported apart), ``bf16`` (CPU autocast): variants of ``plain``;
* ``eval_no_grad`` vs ``eval_inference``: a validation pass over the validation images.

Arms alternate within each round (their order rotates from round to round) so that the
machine's load hits them alike; the result is each arm's median images/s and its ratio to
``plain`` (``eval_no_grad`` for the eval arms) in the same network and round.

    python benchmarks/throughput.py [--networks 4] [--rounds 3] [--steps 40] [--warmup 5]

Writes benchmarks/results/throughput.md and .json (after every round); ``--render`` rewrites the .md
from the .json (e.g. after adding ``notes``). ``--arms`` picks arms, ``--out`` another file.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import optuna
import timm
import torch
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.nn import functional as F

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ArchConfig, resolve_arch
from blocknas.search.data import DataSplit, load_data
from blocknas.search.latency_gate import default_gate
from blocknas.search.study import StudyConfig, load_study_config
from blocknas.search.training import TrainConfig, seed_everything
from blocknas.search.training.brief import BriefTrainer
from blocknas.spaces import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
COMPILE_LIMIT_S = 120.0
TRAIN_ARMS = ("baseline", "trainer_nchw", "plain", "channels_last", "batch64", "batch128", "bf16", "compile")
EVAL_ARMS = ("eval_no_grad", "eval_inference")


def networks(config: StudyConfig, n: int) -> list[tuple[str, ArchConfig]]:
    """``blocknet_separable`` and ``n - 1`` random networks of the study's space within its constraints."""
    space = SearchSpace.load(config.space_path())
    limits = config.constraints.active()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    chosen = [("blocknet_separable", resolve_arch("blocknet_separable"))]
    while len(chosen) < n:
        arch = space.sample(sampler.ask())
        cost = arch.cost()
        if cost.params <= limits.get("params", math.inf) and cost.macs <= limits.get("macs", math.inf):
            chosen.append((f"random:{len(chosen) - 1}", arch))
    return chosen


def build(arch: ArchConfig, num_classes: int, seed: int = 0) -> nn.Module:
    seed_everything(seed)
    return timm.create_model("blocknet", arch=arch, num_classes=num_classes)


def _cosine(opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))


def plain_loop(
    model: nn.Module,
    data: DataSplit,
    train: TrainConfig,
    *,
    batch: int,
    steps: int,
    warmup: int,
    channels_last: bool = False,
    bf16: bool = False,
    state: dict[str, Any] | None = None,
) -> float:
    """A hand-written loop; images/s over ``steps`` timed steps after ``warmup`` untimed ones."""
    if state is None or "opt" not in (state or {}):
        opt = torch.optim.AdamW(param_groups_weight_decay(model, train.weight_decay), lr=train.lr)
        sched = _cosine(opt, 10 * (steps + warmup))
        if state is not None:
            state.update(opt=opt, sched=sched)
    else:
        opt, sched = state["opt"], state["sched"]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x_all, y_all = data.x_train, data.y_train
    if channels_last:
        x_all = x_all.contiguous(memory_format=torch.channels_last)
    order = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0))
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.train()
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
        idx = order[(step * batch) % (len(order) - batch + 1) :][:batch]
        x, y = x_all[idx], y_all[idx]
        with cast:
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=train.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return steps * batch / (time.perf_counter() - start)


def trainer_loop(model: nn.Module, data: DataSplit, train: TrainConfig, *, steps: int, warmup: int) -> float:
    """``BriefTrainer.train_epoch`` (the real loop, gate included): ``warmup`` steps, then ``steps`` timed."""
    trainer = BriefTrainer(model, data, train, seed=0, ema_decay=train.ema_decay)
    trainer.steps_per_epoch = warmup
    trainer.train_epoch(0)
    trainer.steps_per_epoch = steps
    start = time.perf_counter()
    trainer.train_epoch(1)
    return steps * trainer.batch_size / (time.perf_counter() - start)


def eval_pass(model: nn.Module, data: DataSplit, batch: int, *, inference: bool, channels_last: bool) -> float:
    """Images/s of one forward pass over the validation images (a first batch untimed), as the trainer validates."""
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    ctx = torch.inference_mode if inference else torch.no_grad
    with ctx():
        model(data.x_val[:batch].contiguous(memory_format=fmt))
        start = time.perf_counter()
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, len(data.y_val), batch):
            logits = model(data.x_val[i : i + batch].contiguous(memory_format=fmt))
            correct += (logits.argmax(1) == data.y_val[i : i + batch]).sum()
    return len(data.y_val) / (time.perf_counter() - start)


@dataclasses.dataclass
class Bench:
    """One run's settings, the networks and the results gathered so far."""

    args: argparse.Namespace
    train: TrainConfig
    data: DataSplit
    nets: list[tuple[str, ArchConfig]]
    speeds: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    compiled: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def steps_for(self, batch: int) -> int:
        """Timed steps for a batch size: ``--steps`` at the study's batch, the same images at larger ones."""
        return max(8, self.args.steps * self.train.batch_size // batch)

    def arm(self, name: str, label: str, arch: ArchConfig) -> float | None:
        a, t, d = self.args, self.train, self.data
        bs = t.batch_size
        if name == "baseline":
            return trainer_loop(build(arch, d.num_classes), d, t, steps=a.steps, warmup=a.warmup)
        if name == "trainer_nchw":
            nchw = dataclasses.replace(t, channels_last=False)
            return trainer_loop(build(arch, d.num_classes), d, nchw, steps=a.steps, warmup=a.warmup)
        if name in ("plain", "channels_last", "bf16"):
            return plain_loop(
                build(arch, d.num_classes),
                d,
                t,
                batch=bs,
                steps=a.steps,
                warmup=a.warmup,
                channels_last=name == "channels_last",
                bf16=name == "bf16",
            )
        if name in ("batch64", "batch128"):
            b = int(name.removeprefix("batch"))
            return plain_loop(build(arch, d.num_classes), d, t, batch=b, steps=self.steps_for(b), warmup=a.warmup)
        if name == "compile":
            return self.compiled_arm(label, arch)
        model = build(arch, d.num_classes)
        return eval_pass(model, d, t.eval_batch_size, inference=name == "eval_inference", channels_last=t.channels_last)

    def compiled_arm(self, label: str, arch: ArchConfig) -> float | None:
        """``torch.compile`` (default mode): compiled once per network, the compile time kept apart."""
        entry = self.compiled.get(label)
        if entry is None:
            entry = self.compiled[label] = {"model": None, "state": {}, "compile_s": None, "error": None}
            if any(e.get("error") for e in self.compiled.values() if e is not entry):
                entry["error"] = "skipped: compile failed or was too slow on an earlier network"
                return None
            model = cast(nn.Module, torch.compile(build(arch, self.data.num_classes)))
            start = time.perf_counter()
            try:
                plain_loop(
                    model, self.data, self.train, batch=self.train.batch_size, steps=1, warmup=2, state=entry["state"]
                )
            except Exception as exc:  # any compiler failure is a result to report
                entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                return None
            entry["compile_s"] = time.perf_counter() - start
            entry["model"] = model
            if entry["compile_s"] > COMPILE_LIMIT_S:
                entry["error"] = f"compile took {entry['compile_s']:.0f} s (> {COMPILE_LIMIT_S:.0f} s)"
        if entry["model"] is None:
            return None
        a = self.args
        return plain_loop(
            entry["model"],
            self.data,
            self.train,
            batch=self.train.batch_size,
            steps=a.steps,
            warmup=a.warmup,
            state=entry["state"],
        )


def overheads(data: DataSplit, n: int = 2000) -> dict[str, float]:
    """Microseconds per step of the trainer's extras, measured in isolation."""
    out: dict[str, float] = {}
    gate = default_gate()
    if gate is not None:
        start = time.perf_counter()
        for _ in range(n):
            with gate.step():
                pass
        out["gate_step_us"] = (time.perf_counter() - start) / n * 1e6
    logits, y = torch.randn(32, 10, requires_grad=True), data.y_train[:32]
    loss = F.cross_entropy(logits, y, label_smoothing=0.1)
    start = time.perf_counter()
    for _ in range(n):
        torch.stack([loss.detach(), (logits.argmax(dim=1) == y).sum().float()]).tolist()
    out["loss_accuracy_tolist_us"] = (time.perf_counter() - start) / n * 1e6
    x = data.x_train[:32]
    start = time.perf_counter()
    for _ in range(n):
        x.contiguous(memory_format=torch.channels_last)
    out["to_channels_last_input_us"] = (time.perf_counter() - start) / n * 1e6
    return out


def profile_trainer(bench: Bench, arch: ArchConfig) -> str:
    """cProfile of the trainer's timed steps on one network: the top functions by own time."""
    prof = cProfile.Profile()
    trainer = BriefTrainer(build(arch, bench.data.num_classes), bench.data, bench.train, seed=0)
    trainer.steps_per_epoch = bench.args.warmup
    trainer.train_epoch(0)
    trainer.steps_per_epoch = bench.args.steps
    prof.enable()
    trainer.train_epoch(1)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    return buf.getvalue()


LIKE_FOR_LIKE = (("baseline", "channels_last"), ("trainer_nchw", "plain"))
"""The trainer against the plain loop in the same memory format: what the trainer's own loop costs."""


def ratio_stats(speeds: dict[str, dict[str, list[float]]], arm: str, ref: str) -> dict[str, Any] | None:
    """``arm``'s images/s over ``ref``'s, paired by network and round: median, min, max, and per network."""
    ratios, per_net = [], {}
    for label, by_arm in speeds.items():
        r = [g / b for g, b in zip(by_arm.get(arm, []), by_arm.get(ref, []), strict=False) if g and b]
        ratios += r
        if r:
            per_net[label] = {"median": statistics.median(r), "min": min(r), "max": max(r)}
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "per_network": per_net}


def summary(speeds: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Per arm: median images/s over networks × rounds, and the ratio to the reference arm per network/round."""
    arms: dict[str, Any] = {}
    for arm in (*TRAIN_ARMS, *EVAL_ARMS):
        ref = "eval_no_grad" if arm in EVAL_ARMS else "plain"
        got = [g for by_arm in speeds.values() for g in by_arm.get(arm, []) if g]
        if got:
            stats = ratio_stats(speeds, arm, ref) or {}
            arms[arm] = {
                "reference": ref,
                "images_per_s": statistics.median(got),
                "ratio_median": stats.get("median"),
                "ratio_min": stats.get("min"),
                "ratio_max": stats.get("max"),
                "per_network": stats.get("per_network", {}),
            }
    return arms


def like_for_like(speeds: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """:data:`LIKE_FOR_LIKE`'s ratios."""
    pairs = {f"{a}/{b}": ratio_stats(speeds, a, b) for a, b in LIKE_FOR_LIKE}
    return {k: v for k, v in pairs.items() if v is not None}


def render(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        "# Training throughput: the brief trainer vs a plain PyTorch loop",
        "",
        f"`python benchmarks/throughput.py {' '.join(s['argv'])}` · commit {result['commit']} · torch "
        f"{result['torch']} · {result['started']} → {result.get('finished', '(running)')} · {result['machine']}",
        "",
        f"Load average at start {result['load_start']}, at end {result.get('load_end', '?')}. **A shared 2-core VM "
        "with other work running (a ground-truth benchmark on both cores)**: absolute images/s are not the point, "
        "the ratios are (each arm against `plain` on the same network in the same round; arms alternate, their "
        "order rotating every round).",
        "",
        f"Networks: {', '.join(f'`{label}` ({p / 1e3:.0f}k params, {m / 1e6:.1f}M MACs)' for label, p, m in s['networks'])}. "
        f"Data: {s['data']}. Train: batch {s['batch']}, {s['optimizer']}, {s['schedule']}, label smoothing "
        f"{s['label_smoothing']}, 1 thread, channels_last {s['channels_last']} in the study's config. "
        f"{s['steps']} timed steps after {s['warmup']} warm-up steps per arm (batch 64: {s['steps64']}, "
        f"batch 128: {s['steps128']} steps, the same images); eval: one pass over {s['val_images']} validation "
        f"images at batch {s['eval_batch']}. {s['rounds_done']} rounds.",
        "",
        "| arm | median images/s | ratio to reference (median) | min | max | reference |",
        "|---|---|---|---|---|---|",
    ]
    for arm, row in result["arms"].items():
        r = row["ratio_median"]
        lines.append(
            f"| `{arm}` | {row['images_per_s']:.0f} | **{r:.3f}×** | {row['ratio_min']:.3f} | {row['ratio_max']:.3f} "
            f"| `{row['reference']}` |"
            if r is not None
            else f"| `{arm}` | {row['images_per_s']:.0f} | – | – | – | `{row['reference']}` |"
        )
    if result.get("like_for_like"):
        lines += [
            "",
            "Like for like: the trainer against the plain loop in the same memory format (paired by network and round):",
            "",
        ]
        for pair, st in result["like_for_like"].items():
            per = ", ".join(f"`{k}` {v['median']:.3f}" for k, v in st["per_network"].items())
            lines.append(
                f"- `{pair}`: **{st['median']:.3f}×** (min {st['min']:.3f}, max {st['max']:.3f}; per network: {per})"
            )
    lines += ["", "Per network (median ratio to the reference over rounds):", ""]
    labels = [label for label, _, _ in s["networks"]]
    lines += ["| arm | " + " | ".join(f"`{x}`" for x in labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for arm, row in result["arms"].items():
        cells = [f"{row['per_network'][x]['median']:.3f}" if x in row["per_network"] else "–" for x in labels]
        lines.append(f"| `{arm}` | " + " | ".join(cells) + " |")
    if result.get("compile"):
        lines += ["", "`torch.compile` (default mode), compile time (first 3 steps) per network:", ""]
        for label, entry in result["compile"].items():
            took = f"{entry['compile_s']:.1f} s" if entry["compile_s"] is not None else "–"
            lines.append(f"- `{label}`: {took}" + (f"; {entry['error']}" if entry["error"] else ""))
    if result.get("overheads"):
        lines += ["", "The trainer's per-step extras, timed alone (µs per step):", ""]
        lines += [f"- {k}: {v:.1f}" for k, v in result["overheads"].items()]
    if result.get("profile"):
        lines += ["", "cProfile of the trainer's timed steps (first network), top by own time:", "", "```"]
        lines += [result["profile"].strip(), "```"]
    lines += ["", *result.get("notes", [])]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", type=Path, default=ROOT / "configs" / "default.yaml", help="the study (default: the default study)"
    )
    parser.add_argument(
        "--networks", type=int, default=4, help="networks: blocknet_separable + random samples (default 4)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every arm (default 3)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per arm at the study's batch (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before each arm (default 5)")
    parser.add_argument("--arms", default=",".join((*TRAIN_ARMS, *EVAL_ARMS)), help="comma-separated arms to run")
    parser.add_argument(
        "--out", type=Path, default=RESULTS / "throughput.md", help="results file (.md; .json beside it)"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the .md (and the ratios in the .json) from the .json of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.render:
        try:
            earlier = json.loads(args.out.with_suffix(".json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(
                f"throughput: cannot read {args.out.with_suffix('.json')} ({exc}); run the benchmark first",
                file=sys.stderr,
            )
            return 2
        earlier["arms"], earlier["like_for_like"] = summary(earlier["speeds"]), like_for_like(earlier["speeds"])
        write(earlier, args.out)
        return 0
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in (*TRAIN_ARMS, *EVAL_ARMS)]
    if unknown or args.networks < 1 or args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        print(
            f"throughput: bad arguments ({', '.join(unknown) or 'counts must be >= 1'}); arms: {', '.join((*TRAIN_ARMS, *EVAL_ARMS))}",
            file=sys.stderr,
        )
        return 2
    if "plain" not in arms:
        arms.insert(0, "plain")
    if any(a in EVAL_ARMS for a in arms) and "eval_no_grad" not in arms:
        arms.append("eval_no_grad")
    config = load_study_config(args.config)
    train = config.train
    torch.set_num_threads(1)
    nets = networks(config, args.networks)
    need = args.steps * train.batch_size + 1  # every arm's batches come from one pool of images
    data_cfg = dataclasses.replace(
        config.data, max_train_samples=max(need, 128 * max(8, args.steps * train.batch_size // 128) + 128)
    )
    data = load_data(data_cfg, input_size=nets[0][1].input_size, in_chans=nets[0][1].in_chans)
    bench = Bench(args, train, data, nets)
    result: dict[str, Any] = {
        "commit": git_commit(),
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {
            "argv": sys.argv[1:] if argv is None else argv,
            "networks": [(label, a.cost().params, a.cost().macs) for label, a in nets],
            "data": f"{config.data.name}, {len(data.y_train)} training images (a pool for the larger batches), {len(data.y_val)} validation",
            "batch": train.batch_size,
            "optimizer": train.optimizer,
            "schedule": train.schedule,
            "label_smoothing": train.label_smoothing,
            "channels_last": train.channels_last,
            "steps": args.steps,
            "warmup": args.warmup,
            "steps64": bench.steps_for(64),
            "steps128": bench.steps_for(128),
            "val_images": len(data.y_val),
            "eval_batch": train.eval_batch_size,
            "rounds_done": 0,
        },
    }
    result["overheads"] = overheads(data)
    for rnd in range(args.rounds):
        order = arms[rnd % len(arms) :] + arms[: rnd % len(arms)]
        for label, arch in nets:
            for arm in order:
                start = time.perf_counter()
                speed = bench.arm(arm, label, arch)
                bench.speeds.setdefault(label, {}).setdefault(arm, []).append(speed or 0.0)
                print(
                    f"round {rnd} {label:22s} {arm:15s} {speed or 0:8.0f} img/s ({time.perf_counter() - start:.1f} s)",
                    flush=True,
                )
        result["settings"]["rounds_done"] = rnd + 1
        result["arms"] = summary(bench.speeds)
        result["like_for_like"] = like_for_like(bench.speeds)
        result["speeds"] = bench.speeds
        result["compile"] = {k: {"compile_s": v["compile_s"], "error": v["error"]} for k, v in bench.compiled.items()}
        write(result, args.out)
    result["profile"] = profile_trainer(bench, nets[0][1])
    result["load_end"] = [round(x, 2) for x in os.getloadavg()]
    result["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write(result, args.out)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
