#!/usr/bin/env python
"""Does ``pareto_asha`` pay at the ground-truth budget? Replay its decisions on the table's curves.

Every row of ``results/groundtruth.rows.jsonl`` holds a network's validation accuracy after each
epoch of the ground-truth budget and its latency. A *replay* feeds the networks (seed 0) to a
single worker in a random order, twice:

- **plain**: every network trains the full budget;
- **pareto_asha**: at each rung (``min_epochs · η^k`` epochs) the network's accuracy there and its
  latency are ranked among every network recorded at that rung so far, with the pruner's own
  ranking (:func:`blocknas.search.study.pruning.rank_points`, latency ties within 2 %); a network
  outside the top ``⌈n/η⌉`` stops there (never before ``min_trials_per_rung`` networks reached it).

Time is each network's own measured seconds per ground-truth epoch. For each order the replay
notes when each arm's front of complete networks first reaches 95 % of the hypervolume of the
whole table's front; the ratio of the two times (pruned / plain) over many orders is the answer.
The issue's bar: the pruner pays where that ratio is ≤ 0.5.

    python benchmarks/asha_replay.py                   # results/asha_replay.md, .json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from blocknas.search.report.data import hypervolume_2d
from blocknas.search.study.pruning import PruningConfig, RungPoint, rank_points

RESULTS = Path(__file__).resolve().parent / "results"
TIE_REL = 0.02  # the default latency target's rel_precision: the pruner's latency tie tolerance
TARGET = 0.95


@dataclass(frozen=True)
class Network:
    """What the replay needs of a row: its accuracy after each epoch, latency and seconds per epoch."""

    curve: tuple[float, ...]
    latency_ms: float
    epoch_s: float


def networks_of(rows: list[dict[str, Any]], latency_ms: list[float] | None = None) -> list[Network]:
    """The seed-0 rows as replay networks; ``latency_ms`` (one per seed-0 row) replaces the rows' own."""
    first = [r for r in rows if r["seed"] == 0]
    latency = latency_ms or [r["latency_ms"] for r in first]
    return [
        Network(tuple(r["val_acc_curve"]), float(ms), r["truth_seconds"] / len(r["val_acc_curve"]))
        for r, ms in zip(first, latency, strict=True)
    ]


def reference(networks: list[Network]) -> tuple[float, float]:
    """Hypervolume reference: just below the worst final accuracy, 1.1 × the slowest latency."""
    return min(n.curve[-1] for n in networks) - 0.01, 1.1 * max(n.latency_ms for n in networks)


def time_to(
    networks: list[Network], order: list[int], pruning: PruningConfig | None, goal: float, ref: tuple[float, float]
) -> float:
    """Seconds until the front of complete networks reaches hypervolume ``goal`` above ``ref`` (inf: never).

    ``pruning`` None is the plain arm: every network trains the full budget.
    """
    epochs = len(networks[0].curve)
    rungs = pruning.rung_epochs(epochs) if pruning else []
    recorded: list[list[RungPoint]] = [[] for _ in rungs]
    complete: list[tuple[float, float]] = []
    clock = 0.0
    for i in order:
        net = networks[i]
        stopped_at = None
        for k, at in enumerate(rungs):
            assert pruning is not None
            here = RungPoint(i, net.curve[at - 1], net.latency_ms)
            recorded[k].append(here)
            if rank_points(recorded[k], TIE_REL).index(here) >= pruning.keep(len(recorded[k])):
                stopped_at = at
                break
        clock += net.epoch_s * (stopped_at or epochs)
        if stopped_at is None:
            complete.append((net.curve[-1], net.latency_ms))
            if hypervolume_2d(complete, ref) >= goal:
                return clock
    return math.inf


def replay(networks: list[Network], pruning: PruningConfig, orders: int, seed: int = 0) -> dict[str, Any]:
    """Pruned / plain time to 95 % of the table's hypervolume over ``orders`` random orders."""
    ref = reference(networks)
    goal = TARGET * hypervolume_2d([(n.curve[-1], n.latency_ms) for n in networks], ref)
    rng = np.random.default_rng(seed)
    ratios, reached = [], 0
    for _ in range(orders):
        order = [int(i) for i in rng.permutation(len(networks))]
        plain, pruned = time_to(networks, order, None, goal, ref), time_to(networks, order, pruning, goal, ref)
        reached += math.isfinite(pruned)
        ratios.append(pruned / plain)
    low, high = np.percentile(ratios, [2.5, 97.5], method="nearest")  # no interpolation: some ratios are ∞
    return {
        "min_epochs": pruning.min_epochs,
        "eta": pruning.reduction_factor,
        "rung_epochs": pruning.rung_epochs(len(networks[0].curve)),
        "orders": orders,
        "reached": reached,
        "ratio_median": float(np.median(ratios)),
        "ratio_interval": [float(low), float(high)],
        "pays_share": sum(r <= 0.5 for r in ratios) / orders,
    }


def render(results: list[dict[str, Any]], n: int, commits: list[str]) -> str:
    lines = [
        "# pareto_asha replayed on the ground-truth curves\n",
        f"`python benchmarks/asha_replay.py` on {n} networks of `groundtruth.rows.jsonl` (rows from commits "
        f"{', '.join(commits)}). One worker, random network orders; time = each network's measured seconds per "
        f"ground-truth epoch; goal = {TARGET:.0%} of the whole table's hypervolume (reference: 1 pp below the worst "
        "final accuracy, 1.1 × the slowest latency). Ratio = pruned arm's time to the goal / plain arm's, same "
        "order; ∞ where the pruned arm never reaches it (it stopped a front network). The pruner pays where the "
        "ratio is ≤ 0.5.\n",
        "| min_epochs | η | rungs (epochs) | orders | pruned arm reached goal | ratio median [2.5 %, 97.5 %] "
        "| orders with ratio ≤ 0.5 |",
        "|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in results:
        lo, hi = r["ratio_interval"]
        lines.append(
            f"| {r['min_epochs']} | {r['eta']} | {r['rung_epochs']} | {r['orders']} | {r['reached']} | "
            f"{r['ratio_median']:.2f} [{lo:.2f}, {hi:.2f}] | {r['pays_share']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=Path, default=RESULTS / "groundtruth.rows.jsonl")
    parser.add_argument("--orders", type=int, default=200, help="random network orders per setting")
    parser.add_argument("--out", type=Path, default=RESULTS / "asha_replay.md")
    parser.add_argument("--latency", type=Path, default=None, help="quiet latencies (groundtruth.py latency)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from groundtruth import QUIET_LATENCY, latencies, read_rows

    rows = read_rows(args.rows)
    latency_ms, latency_source = latencies([r for r in rows if r["seed"] == 0], args.latency or QUIET_LATENCY)
    networks = networks_of(rows, latency_ms)
    if len(networks) < 5:
        print(f"{args.rows} holds {len(networks)} seed-0 networks: run groundtruth.py collect first", file=sys.stderr)
        return 2
    settings = [(1, 2), (1, 3), (2, 2), (3, 3)]
    results = [replay(networks, PruningConfig(min_epochs=m, reduction_factor=eta), args.orders) for m, eta in settings]
    commits = sorted({r.get("commit", "unknown") for r in rows})
    args.out.write_text(render(results, len(networks), commits) + "\n" + latency_source + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"n_networks": len(networks), "settings": results}, indent=1))
    print(f"wrote {args.out}; median ratios {[round(r['ratio_median'], 2) for r in results]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
