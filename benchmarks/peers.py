#!/usr/bin/env python
"""Peers on the same data: the default study's front against timm's hand-designed small networks.

Every network — the front architectures of a finished study (``configs/discovered/<study>/t*.yaml``)
and timm's small models built with ``timm.create_model(name, num_classes=10, in_chans=3)``,
no pretrained weights — is trained with one recipe, identical for all: the study's trainer
(``train_briefly``), data (its ``DataConfig``, 32×32, 3 channels) and training settings
with ``--epochs`` epochs, for ``--seeds`` seeds (seed ``s`` fixes initialisation and data
order). Latency comes from the latency engine with one target for all (ONNX Runtime,
1 thread, batch 1); params are counted, MACs are ``FlopCounterMode`` FLOPs / 2 for every
network. The report gives each set's hypervolume on (mean accuracy up, latency p50 down)
and which peers a found network dominates.

    python benchmarks/peers.py                      # after `make search`
    python benchmarks/peers.py --epochs 2 --seeds 1 --models lcnet_050 --no-found   # a quick look

Results: ``benchmarks/results/peers.md`` (and ``.json``), rewritten after every network.

At the ground-truth budget (``--recipe groundtruth``) every network and seed is one JSON line in
``--rows`` (default ``results/peers_groundtruth.rows.jsonl``), so the run resumes where it stopped and
several processes split it by claims (the same command twice on two cores). A found network the
ground-truth table already trained at the same seed and budget is read from the table, not trained
again. Latencies measured beside other trainers are not comparable, so ``--latency-pass`` measures
every network once more, round robin in one process on an idle machine, and the report uses that.

    python benchmarks/peers.py --recipe groundtruth --epochs 10 --max-train-samples 10000 --seeds 1 &
    python benchmarks/peers.py --recipe groundtruth --epochs 10 --max-train-samples 10000 --seeds 1
    python benchmarks/peers.py --recipe groundtruth --epochs 10 --max-train-samples 10000 --seeds 1 --latency-pass
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ArchConfig
from blocknas.search.data import load_data
from blocknas.search.latency import LatencyTarget, measure_latency
from blocknas.search.report.data import hypervolume_2d
from blocknas.search.study import StudyConfig, load_study_config
from blocknas.search.tracking.claims import FileClaims
from blocknas.search.training import TrainConfig, seed_everything, train_briefly

log = logging.getLogger("peers")
RESULTS = Path(__file__).resolve().parent / "results"
PEERS = (
    "mobilenetv3_small_050",
    "mobilenetv3_small_100",
    "lcnet_050",
    "lcnet_100",
    "mobilenetv2_050",
    "resnet10t",
    "ghostnet_050",
    "efficientnet_lite0",
    "cifar_resnet8",
    "cifar_resnet20",
)
TARGET = LatencyTarget(runtime="onnxruntime", threads=1, batch_size=1)
INPUT = (3, 32, 32)


@dataclass
class Row:
    """One network: what it is, what it costs and what it reaches per seed."""

    name: str
    found: bool
    params: int
    macs: int
    latency_ms: float = float("nan")
    accuracy: dict[int, float] = field(default_factory=dict)
    train_seconds: float = 0.0

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.accuracy.values()))) if self.accuracy else float("nan")

    @property
    def std(self) -> float:
        return float(np.std(list(self.accuracy.values()), ddof=1)) if len(self.accuracy) > 1 else float("nan")


class BasicBlock(torch.nn.Module):
    """He et al.'s CIFAR basic block: two 3×3 conv-BN, ReLU, identity or 1×1-projection shortcut."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def cifar_resnet(depth: int, num_classes: int = 10, in_chans: int = INPUT[0]) -> torch.nn.Module:
    """The classic small-image ResNet (He et al. 2016, section 4.2): depth 6n+2, a stride-1 3×3 stem of 16
    channels, three stages of n basic blocks at 16/32/64 channels (strides 1/2/2), global pooling, one linear
    layer. Shortcuts that change shape are 1×1 projections (the paper's option B)."""
    if (depth - 2) % 6:
        raise ValueError(f"a CIFAR ResNet has depth 6n+2, not {depth}")
    n, nn = (depth - 2) // 6, torch.nn
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    chs = 16
    for out_chs, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            layers.append(BasicBlock(chs, out_chs, stride if i == 0 else 1))
            chs = out_chs
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chs, num_classes)]
    return nn.Sequential(*layers)


CIFAR_RESNETS = {"cifar_resnet8": 8, "cifar_resnet20": 20}


def build(name: str, arch: Path | None) -> torch.nn.Module:
    """A found network from its YAML, a CIFAR ResNet, or a timm peer with 10 classes and 3 input channels, untrained."""
    if arch is not None:
        return timm.create_model("blocknet", arch=str(arch))
    if name in CIFAR_RESNETS:
        return cifar_resnet(CIFAR_RESNETS[name])
    return timm.create_model(name, pretrained=False, num_classes=10, in_chans=INPUT[0])


def count_macs(model: torch.nn.Module) -> int:
    """Multiply-accumulates of one eval-mode forward pass at batch 1: FlopCounterMode's FLOPs / 2."""
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *INPUT))
    return counter.get_total_flops() // 2


def train_once(
    name: str, arch: Path | None, config: StudyConfig, train: TrainConfig, seed: int, recipe: str = "brief"
) -> dict[str, Any]:
    """Measure ``name`` and train it with ``seed`` and ``recipe``: ``brief`` (the study's trainer and data) or
    ``groundtruth`` (``benchmarks/groundtruth.py``'s: ``blocknas train``'s recipe with EMA, its data and epochs).
    One record: what the network is and costs, and the accuracy it reached."""
    model = build(name, arch)
    record: dict[str, Any] = {
        "name": name,
        "found": arch is not None,
        "seed": seed,
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model),
        "latency_ms": measure_latency(model.eval(), INPUT, TARGET).p50_ms,
        **budget(config, train, recipe),
    }
    data_config = config.data
    if recipe == "groundtruth":
        truth = _groundtruth().truth_config(train.epochs, config.data.max_train_samples or 10_000)
        data_config, train = truth.data, truth.train
    data = load_data(data_config, input_size=INPUT[1:], in_chans=INPUT[0])
    start = time.perf_counter()
    seed_everything(seed)
    if recipe == "groundtruth":
        curve = _groundtruth().train_model(build(name, arch), data, data_config, train, seed, augment=True)
        record["accuracy"] = curve[-1]["ema_val_accuracy"]
    else:
        record["accuracy"] = train_briefly(build(name, arch), data, train, seed=seed).val_accuracy
    record["train_seconds"] = time.perf_counter() - start
    log.info("%s seed %d: %.4f", name, seed, record["accuracy"])
    return record


def budget(config: StudyConfig, train: TrainConfig, recipe: str) -> dict[str, Any]:
    """What makes two records comparable: the recipe, its epochs and training images."""
    return {"recipe": recipe, "epochs": train.epochs, "train_images": config.data.max_train_samples}


def from_table(table: Path, arch: Path, seed: int, config: StudyConfig, train: TrainConfig) -> dict[str, Any] | None:
    """A found network's record from the ground-truth table, when the table trained it at this seed and budget."""
    if not table.is_file():
        return None
    wanted = ArchConfig.from_yaml(arch).short_hash()
    for row in _groundtruth().read_rows(table):
        same_budget = row["budget"]["epochs"] == train.epochs
        same_budget &= row["budget"]["train_images"] == (config.data.max_train_samples or 10_000)
        if row["arch_hash"] == wanted and row["seed"] == seed and same_budget:
            return {
                "name": arch.stem,
                "found": True,
                "seed": seed,
                "params": row["params"],
                "macs": row["macs"],
                "latency_ms": row["latency_ms"],
                **budget(config, train, "groundtruth"),
                "accuracy": row["val_acc_curve"][-1],
                "train_seconds": row["truth_seconds"],
                "from_table": f"{table.name} ({row['arch_hash']}, seed {seed})",
            }
    return None


def read_records(path: Path | None, want: dict[str, Any]) -> list[dict[str, Any]]:
    """The records in ``path`` trained at the budget ``want`` (others are another run's)."""
    if path is None or not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if all(r.get(k) == v for k, v in want.items())]


def to_rows(records: list[dict[str, Any]], latency: dict[str, float] | None = None) -> list[Row]:
    """One :class:`Row` per network, its seeds gathered; ``latency`` (a quiet pass) replaces the records'."""
    rows: dict[str, Row] = {}
    for r in records:
        row = rows.setdefault(r["name"], Row(r["name"], r["found"], r["params"], r["macs"], r["latency_ms"]))
        row.accuracy[r["seed"]] = r["accuracy"]
        row.train_seconds += r["train_seconds"]
        if latency and r["name"] in latency:
            row.latency_ms = latency[r["name"]]
    return list(rows.values())


def _groundtruth():  # type: ignore[no-untyped-def]
    """``benchmarks/groundtruth.py`` as a module (its recipe and trainer)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import groundtruth

    return groundtruth


def dominates(a: Row, b: Row) -> bool:
    """``a`` is at least as accurate (mean over seeds) and as fast as ``b``, and strictly better in one."""
    return a.mean >= b.mean and a.latency_ms <= b.latency_ms and (a.mean > b.mean or a.latency_ms < b.latency_ms)


def summarize(rows: list[Row]) -> dict[str, object]:
    found = [r for r in rows if r.found and r.accuracy]
    peers = [r for r in rows if not r.found and r.accuracy]
    reference = (0.0, 1.1 * max(r.latency_ms for r in found + peers))
    summary: dict[str, object] = {
        "reference": reference,
        "hypervolume_found": hypervolume_2d([(r.mean, r.latency_ms) for r in found], reference),
        "hypervolume_peers": hypervolume_2d([(r.mean, r.latency_ms) for r in peers], reference),
        "dominated_by": {p.name: [f.name for f in found if dominates(f, p)] for p in peers},
    }
    if peers and found:
        best = max(peers, key=lambda r: r.mean)
        matches = [f for f in found if f.mean >= best.mean]
        fastest = min(matches, key=lambda r: r.latency_ms) if matches else None
        summary["most_accurate_peer"] = best.name
        summary["match"] = (
            {"name": fastest.name, "speedup": best.latency_ms / fastest.latency_ms} if fastest is not None else None
        )
        summary["closest_found"] = max(found, key=lambda r: r.mean).name
    return summary


def render(rows: list[Row], summary: dict, config: StudyConfig, train: TrainConfig, note: str) -> str:
    ref_acc, ref_lat = summary["reference"]
    dominated_by = summary["dominated_by"]
    n_dominated = sum(1 for by in dominated_by.values() if by)
    lines = [
        "# Peers on the same data: found front vs timm's small networks",
        "",
        f"Data: `{config.data.name}`, {config.data.max_train_samples or 'all'} training images, "
        f"{config.data.max_val_samples or 'all'} validation images (study `{config.name}`'s DataConfig), "
        "32×32, 3 channels. One recipe for every network: the search's trainer (`train_briefly`), "
        f"{train.epochs} epochs, batch {train.batch_size}, {train.optimizer} lr {train.lr:g} weight decay "
        f"{train.weight_decay:g}, {train.schedule} schedule with {train.warmup_epochs:g} warmup epochs, label smoothing "
        f"{train.label_smoothing:g}, {train.threads} torch thread; no pretrained weights. Latency: ONNX Runtime, "
        "1 thread, batch 1 (the latency engine's p50); MACs: FlopCounterMode FLOPs / 2 at batch 1.",
        "",
        note,
        "",
        "## Result",
        "",
        f"- Hypervolume (mean accuracy × latency ms, reference accuracy {ref_acc:g}, latency {ref_lat:.3f} ms = "
        f"1.1 × the slowest network): found front **{summary['hypervolume_found']:.4f}**, peers "
        f"**{summary['hypervolume_peers']:.4f}**.",
        f"- Found networks dominate {n_dominated} of {len(dominated_by)} peers"
        + (
            " (not dominated: " + ", ".join(f"`{p}`" for p, by in dominated_by.items() if not by) + ")."
            if n_dominated < len(dominated_by)
            else "."
        ),
    ]
    if "most_accurate_peer" in summary:
        best = next(r for r in rows if r.name == summary["most_accurate_peer"])
        match = summary["match"]
        if match:
            lines.append(
                f"- Most accurate peer `{best.name}` ({100 * best.mean:.2f} %, {best.latency_ms:.3f} ms): "
                f"`{match['name']}` is at least as accurate at 1/{match['speedup']:.1f} of its latency."
            )
        else:
            closest = next(r for r in rows if r.name == summary["closest_found"])
            lines.append(
                f"- Most accurate peer `{best.name}` ({100 * best.mean:.2f} %, {best.latency_ms:.3f} ms): no found "
                f"network matches it; the most accurate found one, `{closest.name}`, reaches {100 * closest.mean:.2f} % "
                f"at {closest.latency_ms:.3f} ms."
            )
    lines += [
        "",
        "## Networks",
        "",
        "| network | set | accuracy % (mean ± std) | seeds | latency p50 ms | params | MACs | dominated by |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: r.latency_ms):
        std = f" ± {100 * r.std:.2f}" if r.std == r.std else ""
        by = ", ".join(dominated_by.get(r.name, [])) if not r.found else ""
        lines.append(
            f"| `{r.name}` | {'found' if r.found else 'peer'} | {100 * r.mean:.2f}{std} | {len(r.accuracy)} | "
            f"{r.latency_ms:.3f} | {r.params:,} | {r.macs / 1e6:.2f}M | {by} |"
        )
    return "\n".join(lines) + "\n"


def write(rows: list[Row], config: StudyConfig, train: TrainConfig, note: str, out: Path) -> None:
    summary = summarize(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(rows, summary, config, train, note))
    out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml", help="the study's config (data, training recipe)")
    parser.add_argument(
        "--front",
        help="folder of the front's t*.yaml (default configs/discovered/<study>; groundtruth recipe: the table's front)",
    )
    parser.add_argument("--epochs", type=int, default=6, help="epochs for every network")
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0..n-1 for every network")
    parser.add_argument("--models", default=",".join(PEERS), help="comma-separated timm model names")
    parser.add_argument("--max-train-samples", type=int, help="override the study's training subsample")
    parser.add_argument("--no-found", action="store_true", help="peers only")
    parser.add_argument(
        "--recipe",
        choices=("brief", "groundtruth"),
        default="brief",
        help="brief: the study's own trainer and data; groundtruth: groundtruth.py's recipe (blocknas train's, "
        "EMA, all 10,000 test images; --epochs and --max-train-samples set its budget, e.g. 10 and 10000)",
    )
    parser.add_argument("--rows", help="records, one per network and seed (JSON lines): the run resumes from them")
    parser.add_argument(
        "--table",
        default=str(RESULTS / "groundtruth.rows.jsonl"),
        help="groundtruth recipe: found networks the ground-truth table trained at this budget are read from it",
    )
    parser.add_argument(
        "--latency-pass", action="store_true", help="measure every network of --rows again, quietly, and report"
    )
    parser.add_argument("--out", default=None, help="the report (default results/peers.md, peers_groundtruth.md)")
    parser.add_argument("--note", default="", help="a line about the setup, written into the results")
    args = parser.parse_args(argv)
    args.out = args.out or str(RESULTS / ("peers_groundtruth.md" if args.recipe == "groundtruth" else "peers.md"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    config = load_study_config(args.config)
    if args.max_train_samples:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, max_train_samples=args.max_train_samples)
        )
    train = dataclasses.replace(config.train, epochs=args.epochs, time_budget_s=None, threads=1)
    default_front = (
        RESULTS / "groundtruth_front" if args.recipe == "groundtruth" else Path("configs/discovered") / config.name
    )
    front_dir = Path(args.front or default_front)
    found = [] if args.no_found else sorted(front_dir.glob("t*.yaml"))
    if not args.no_found and not found:
        sys.exit(f"no t*.yaml in {front_dir}; run `make search` first (or pass --front / --no-found)")
    todo = [(p.stem, p) for p in found] + [(name, None) for name in args.models.split(",") if name]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    if args.recipe == "groundtruth":
        args.note = (
            f"**Recipe: the ground-truth one** (`benchmarks/groundtruth.py`: `configs/train/default.yaml`, crop+flip, "
            f"EMA 0.998, EMA top-1 on all 10,000 test images), {args.epochs} epochs on "
            f"{config.data.max_train_samples or 10_000:,} training images; the recipe line above is the brief one. "
            + args.note
        )
    want = budget(config, train, args.recipe)
    rows_path = Path(args.rows) if args.rows else None
    if rows_path is None and args.recipe == "groundtruth":
        rows_path = RESULTS / "peers_groundtruth.rows.jsonl"
    latency_path = rows_path.with_name(rows_path.stem + ".latency.json") if rows_path else None
    if args.latency_pass:
        if rows_path is None or latency_path is None:
            sys.exit("--latency-pass measures the networks of --rows; pass --rows")
        records = read_records(rows_path, want)
        latency_pass(todo, records, latency_path)
        note = f"{len(to_rows(records))} of {len(todo)} networks trained (commit {commit or 'unknown'}). {args.note}"
        write(to_rows(records, quiet_latencies(latency_path)), config, train, note.strip(), Path(args.out))
        print(Path(args.out).read_text())
        return 0
    claims = FileClaims(rows_path.with_name(rows_path.stem + ".claims")) if rows_path else None
    records = read_records(rows_path, want)
    start = time.perf_counter()
    for i, (name, arch) in enumerate(todo):
        for seed in range(args.seeds):
            if any(r["name"] == name and r["seed"] == seed for r in records):
                continue
            key = f"{name}-seed{seed}"
            if claims is not None and not claims.claim(key, note=args.recipe).held:
                continue  # another process trains it
            try:
                records = read_records(rows_path, want) if rows_path else records
                if any(r["name"] == name and r["seed"] == seed for r in records):
                    continue  # finished between the look and the claim
                record = None
                if arch is not None and args.recipe == "groundtruth":
                    record = from_table(Path(args.table), arch, seed, config, train)
                if record is None:
                    record = train_once(name, arch, config, train, seed, args.recipe)
                record.update(commit=commit, host=platform.node())
                if rows_path is not None:
                    with rows_path.open("a") as f:
                        f.write(json.dumps(record) + "\n")
                records.append(record)
            finally:
                if claims is not None:
                    claims.release(key)
        log.info("%d/%d %s done", i + 1, len(todo), name)
        rows = to_rows(records, quiet_latencies(latency_path))
        note = (
            f"{len(rows)} of {len(todo)} networks trained; {time.perf_counter() - start:.0f} s this run on "
            f"{platform.machine()} (commit {commit or 'unknown'}). {args.note}".strip()
        )
        write(rows, config, train, note, Path(args.out))
    print(Path(args.out).read_text())
    return 0


def latency_pass(todo: Sequence[tuple[str, Path | None]], records: list[dict[str, Any]], out: Path) -> None:
    """Every network with a record measured again, round robin in this one process: ``out`` (JSON)."""
    names = {r["name"] for r in records}
    factories = {name: functools.partial(build, name, arch) for name, arch in todo if name in names}
    record = _groundtruth().write_round_robin(factories, INPUT, TARGET, 5, out)
    print(f"wrote {out}: {len(record['networks'])} networks, 1-min load {record['load_before'][0]:.1f} before")


def quiet_latencies(path: Path | None) -> dict[str, float] | None:
    """The latency pass's medians by network, if it ran."""
    if path is None or not path.is_file():
        return None
    return {name: n["latency_ms"] for name, n in json.loads(path.read_text())["networks"].items()}


if __name__ == "__main__":
    sys.exit(main())
