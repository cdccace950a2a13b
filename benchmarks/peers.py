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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.search.data import load_data
from blocknas.search.latency import LatencyTarget, measure_latency
from blocknas.search.report.data import hypervolume_2d
from blocknas.search.study import StudyConfig, load_study_config
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


def evaluate(
    name: str, arch: Path | None, config: StudyConfig, train: TrainConfig, seeds: list[int], recipe: str = "brief"
) -> Row:
    """Measure ``name`` and train it once per seed with ``recipe``: ``brief`` (the study's trainer and data) or
    ``groundtruth`` (``benchmarks/groundtruth.py``'s: ``blocknas train``'s recipe with EMA, its data and epochs)."""
    model = build(name, arch)
    row = Row(name, arch is not None, sum(p.numel() for p in model.parameters()), count_macs(model))
    row.latency_ms = measure_latency(model.eval(), INPUT, TARGET).p50_ms
    data_config = config.data
    if recipe == "groundtruth":
        truth = _groundtruth().truth_config(train.epochs, config.data.max_train_samples or 10_000)
        data_config, train = truth.data, truth.train
    data = load_data(data_config, input_size=INPUT[1:], in_chans=INPUT[0])
    start = time.perf_counter()
    for seed in seeds:
        seed_everything(seed)
        if recipe == "groundtruth":
            curve = _groundtruth().train_model(build(name, arch), data, data_config, train, seed, augment=True)
            row.accuracy[seed] = curve[-1]["ema_val_accuracy"]
        else:
            row.accuracy[seed] = train_briefly(build(name, arch), data, train, seed=seed).val_accuracy
        log.info("%s seed %d: %.4f", name, seed, row.accuracy[seed])
    row.train_seconds = time.perf_counter() - start
    return row


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
    parser.add_argument("--front", help="folder of the front's t*.yaml (default configs/discovered/<study>)")
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
    parser.add_argument("--out", default=str(RESULTS / "peers.md"))
    parser.add_argument("--note", default="", help="a line about the setup, written into the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)

    config = load_study_config(args.config)
    if args.max_train_samples:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, max_train_samples=args.max_train_samples)
        )
    train = dataclasses.replace(config.train, epochs=args.epochs, time_budget_s=None, threads=1)
    front_dir = Path(args.front or Path("configs/discovered") / config.name)
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
    rows: list[Row] = []
    start = time.perf_counter()
    for i, (name, arch) in enumerate(todo):
        rows.append(evaluate(name, arch, config, train, list(range(args.seeds)), args.recipe))
        log.info(
            "%d/%d %s: %.4f ± %.4f, %.3f ms", i + 1, len(todo), name, rows[-1].mean, rows[-1].std, rows[-1].latency_ms
        )
        note = (
            f"{len(rows)} of {len(todo)} networks done; {time.perf_counter() - start:.0f} s on {platform.machine()} "
            f"(commit {commit or 'unknown'}). {args.note}".strip()
        )
        write(rows, config, train, note, Path(args.out))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
