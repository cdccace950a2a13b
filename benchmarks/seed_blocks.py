#!/usr/bin/env python
"""The seed question's comparisons from ablation results: paired differences over seeds, and the seeds needed.

Reads one or more ``cells.csv`` files of a ``block`` ablation per budget match (the
pilot's and a later run's with other seeds can be combined: cells are keyed by variant
and seed, and the runs must have built the same network for every variant, which each
run's ``variants.csv`` shows) and reports, per match, each block against ``standard`` and ``reversed``
against ``separable`` (the seed's own comparison): the mean paired difference, its
95 % t-interval over seeds, whether the interval excludes 0, and the seed count ``n``
with ``t_{0.975, n-1} · sd / sqrt(n) <= --half-width`` from the observed spread.

    python benchmarks/seed_blocks.py --match params=/tmp/a/seed_blocks/report/cells.csv \\
        --match latency=/tmp/a/seed_blocks_latency/report/cells.csv

Prints Markdown (``--out`` writes it too); ``--plot params=docs/img/ablation_seed_blocks.png`` draws a
match's combined cells as the ablation report's accuracy-vs-latency plot.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy import stats

from blocknas.search.ablation.stats import mean_std, paired_difference
from blocknas.search.ablation.tables import LevelPoint, plot_points

LEVELS = ("standard", "separable", "reversed", "inverted_residual")
COMPARISONS = (
    ("separable", "standard"),
    ("reversed", "standard"),
    ("inverted_residual", "standard"),
    ("reversed", "separable"),
)


def check_same_architectures(paths: list[Path]) -> None:
    """Cells of several runs combine only if each variant is the same network in all of them.

    A latency match is a measurement, so two runs can scale a block to different widths: the
    ``arch_hash`` in each run's ``variants.csv`` (beside its ``cells.csv``) must agree.
    """
    seen: dict[str, tuple[str, Path]] = {}
    for path in paths:
        variants = path.with_name("variants.csv")
        if not variants.exists():
            raise SystemExit(f"{variants} is missing: cannot check that {path}'s variants are the same networks")
        with variants.open(newline="") as f:
            for row in csv.DictReader(f):
                earlier = seen.setdefault(row["variant"], (row["arch_hash"], path))
                if earlier[0] != row["arch_hash"]:
                    raise SystemExit(
                        f"{row['variant']} is architecture {earlier[0]} in {earlier[1]} but {row['arch_hash']} in "
                        f"{path} (width × {row['width_multiplier']}): their cells do not combine"
                    )


def read_cells(paths: list[Path]) -> dict[str, dict[int, tuple[float, float]]]:
    """(accuracy, latency p50 ms) per block level and seed over every file (a later file's cell replaces an earlier one)."""
    if len(paths) > 1:
        check_same_architectures(paths)
    cells: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)
    for path in paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row["state"] == "COMPLETE" and row["accuracy"]:
                    latency = float(row["latency_p50_ms"]) if row["latency_p50_ms"] else math.nan
                    cells[row["variant"].removeprefix("block=")][int(row["seed"])] = (float(row["accuracy"]), latency)
    return cells


def accuracies(cells: dict[str, dict[int, tuple[float, float]]]) -> dict[str, dict[int, float]]:
    return {level: {seed: acc for seed, (acc, _) in by_seed.items()} for level, by_seed in cells.items()}


def level_points(cells: dict[str, dict[int, tuple[float, float]]]) -> list[LevelPoint]:
    """One point per block: median latency p50 and accuracy mean ± std over seeds, as the ablation report plots."""
    points = []
    for level in LEVELS:
        by_seed = cells.get(level, {})
        if by_seed:
            mean, std = mean_std([acc for acc, _ in by_seed.values()])
            latency = statistics.median(lat for _, lat in by_seed.values() if not math.isnan(lat))
            points.append(LevelPoint(level, latency, mean, std, is_base=level == "standard"))
    return points


def seeds_needed(sd: float, half_width: float, confidence: float = 0.95, most: int = 1000) -> int | None:
    """Smallest n >= 2 with ``t_{(1+c)/2, n-1} · sd / sqrt(n) <= half_width`` (``None`` above ``most``)."""
    for n in range(2, most + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None


def table(acc: dict[str, dict[int, float]], half_width: float) -> list[str]:
    lines = [
        "| level | seeds | accuracy % (mean ± std) |",
        "|---|---:|---:|",
    ]
    for level in LEVELS:
        mean, std = mean_std(list(acc.get(level, {}).values()))
        lines.append(f"| {level} | {len(acc.get(level, {}))} | {100 * mean:.2f} ± {100 * std:.2f} |")
    lines += [
        "",
        "| comparison | seeds | Δ pp (mean) [95 % CI] | CI half-width pp | sd of Δ pp | excludes 0 | seeds for ±"
        f"{half_width:g} pp |",
        "|---|---:|---:|---:|---:|:---:|---:|",
    ]
    for level, base in COMPARISONS:
        d = paired_difference(acc.get(level, {}), acc.get(base, {}))
        need = seeds_needed(100 * d.std, half_width) if d.n >= 2 else None
        lines.append(
            f"| {level} − {base} | {d.n} | {100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] | "
            f"{100 * (d.high - d.low) / 2:.2f} | {100 * d.std:.2f} | {'yes' if d.excludes_zero else 'no'} | "
            f"{need if need is not None else '> 1000'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--match",
        action="append",
        required=True,
        help="NAME=CELLS_CSV[,CELLS_CSV...]: one budget match's cells.csv files",
    )
    parser.add_argument("--half-width", type=float, default=0.5, help="target CI half-width in pp")
    parser.add_argument("--out", help="also write the Markdown here")
    parser.add_argument(
        "--plot",
        action="append",
        default=[],
        help="NAME=PNG: draw that match's combined cells as the ablation report's accuracy-vs-latency plot",
    )
    args = parser.parse_args(argv)
    plots = dict(spec.split("=", 1) for spec in args.plot)
    lines: list[str] = []
    for spec in args.match:
        name, _, files = spec.partition("=")
        cells = read_cells([Path(p) for p in files.split(",")])
        lines += [f"### matched on {name}", "", *table(accuracies(cells), args.half_width), ""]
        if name in plots:
            seeds = max((len(by_seed) for by_seed in cells.values()), default=0)
            title = f"seed_blocks matched on {name}, {seeds} seeds"
            plot_points({"block": level_points(cells)}, plots.pop(name), title)
    if plots:
        parser.error(f"--plot names no --match: {', '.join(plots)}")
    text = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
