"""Latency agent benchmark: does the agent measure what a local measurement measures, and does a table
calibrated through it predict networks it never saw?

Run on demand (a few minutes); writes ``benchmarks/results/agent.md``::

    .venv/bin/python benchmarks/agent.py [--n 30] [--n-calib 10] [--core 1] [--seed 0]

1. The single-file agent (``blocknas latency agent-script``), started without torch and
   pinned to ``--core`` with ``taskset``, against local measurement in this process pinned
   to the same core (never both at once): ``--n`` random ``mobile32`` networks at 32×32,
   each measured both ways in alternating order (ABBA); Kendall τ between the two rankings
   and the median relative difference. Goal τ ≥ 0.95.
2. A lookup table calibrated through the agent on ``--n-calib`` other networks predicts the
   ``--n`` networks before they are measured on the agent: share within ±10 %, Kendall τ.
   Goal ≥ 90 % within ±10 %.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from blocknas.blocks import ArchConfig, BlockNet
from blocknas.search.latency import (
    LatencyTarget,
    NetworkShape,
    calibrate_table,
    measure_latency,
    sample_architectures,
    write_agent_zipapp,
)
from blocknas.search.threads import seeded_rng
from blocknas.spaces import SearchSpace

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"tau": 0.95, "within10": 0.90}
TORCH_FREE = "import runpy, sys; sys.modules.update(torch=None, scipy=None); runpy.run_path({!r}, run_name='__main__')"


def start_agent(folder: Path, core: int) -> tuple[subprocess.Popen[str], str]:
    """The single-file agent, torch unimportable, pinned to ``core``; its process and address."""
    script = write_agent_zipapp(folder / "blocknas-agent.pyz")
    argv = ["taskset", "-c", str(core), sys.executable, "-c", TORCH_FREE.format(str(script)), "--port", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 1.0)[0]:
            line = process.stdout.readline()
            if "listening on" in line:
                return process, line.split("listening on ")[1].split()[0]
    process.kill()
    raise RuntimeError("the agent did not start")


def build(arch: ArchConfig) -> BlockNet:
    with seeded_rng(0):
        return BlockNet(arch)


def compare(archs: list[ArchConfig], target: LatencyTarget, url: str) -> dict[str, list[float]]:
    """Each network measured here twice and on the agent once, the order rotating from network to network.

    The two local measurements are the noise floor: how well this machine, at this load, agrees with itself.
    """
    out: dict[str, list[float]] = {"local": [], "agent": [], "local_again": []}
    for i, arch in enumerate(archs):
        model, shape = build(arch), (arch.in_chans, *arch.input_size)
        runs = [("local", target), ("agent", target.replace(agent=url)), ("local_again", target)]
        runs = runs[i % 3 :] + runs[: i % 3]
        for name, run_target in runs:
            out[name].append(measure_latency(model, shape, run_target).p50_ms)
        print(f"{i + 1:2d}/{len(archs)} " + "  ".join(f"{k} {v[-1]:.4f} ms" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30, help="networks compared, and predicted by the table")
    parser.add_argument("--n-calib", type=int, default=10, help="other networks the table is calibrated on")
    parser.add_argument("--core", type=int, default=1, help="the one core both the agent and local measuring use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/agent.md")
    args = parser.parse_args()
    started, load_start = time.perf_counter(), os.getloadavg()
    os.sched_setaffinity(0, {args.core})  # local measurements (and exports) on the agent's core
    space = SearchSpace.load("mobile32").for_data(NetworkShape())
    # calibrate_table draws the same networks (same space, count and seed): its first n_calib fit the table,
    # the n others, compared here, are held out
    archs = sample_architectures(space, args.n_calib + args.n, args.seed)
    calib, test = archs[: args.n_calib], archs[args.n_calib :]
    target = LatencyTarget()
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_agent(Path(tmp), args.core)
        try:
            pairs = compare(test, target, url)
            load_mid = os.getloadavg()
            table_started = time.perf_counter()
            calibration = calibrate_table(
                target.replace(agent=url),
                space,
                out_dir=Path(tmp) / "tables",
                n_networks=len(calib),
                n_held_out=len(test),
                seed=args.seed,
            )
            table_s = time.perf_counter() - table_started
        finally:
            process.kill()
            process.wait()
    tau = float(kendalltau(pairs["local"], pairs["agent"]).statistic)
    delta = np.abs(np.array(pairs["agent"]) - pairs["local"]) / np.array(pairs["local"])
    floor = np.abs(np.array(pairs["local_again"]) - pairs["local"]) / np.array(pairs["local"])
    stats: dict[str, Any] = {
        "tau": tau,
        "tau_floor": float(kendalltau(pairs["local"], pairs["local_again"]).statistic),
        "median_floor": float(np.median(floor)),
        "median_delta": float(np.median(delta)),
        "max_delta": float(delta.max()),
        "over5": float(np.mean(delta > 0.05)),
        "agent_over_local": float(np.median(np.array(pairs["agent"]) / pairs["local"])),
        **{f"table_{k}": v for k, v in calibration.accuracy.items()},
        "table_entries": len(calibration.table),
        "table_s": table_s,
        "loads": (load_start, load_mid, os.getloadavg()),
        "minutes": (time.perf_counter() - started) / 60,
        "fingerprint": calibration.table.fingerprint,
    }
    print({k: v for k, v in stats.items() if k != "fingerprint"})
    args.out.write_text(report(args, stats))
    print(f"wrote {args.out}")


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(args: argparse.Namespace, s: dict[str, Any]) -> str:
    loads = ", ".join(f"{a[0]:.1f}" for a in s["loads"])
    fp = s["fingerprint"]
    lines = [
        "# Latency agent benchmark",
        "",
        f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC. Command: `.venv/bin/python benchmarks/agent.py "
        f"--n {args.n} --n-calib {args.n_calib} --core {args.core} --seed {args.seed}` ({s['minutes']:.1f} min).",
        "",
        f"{args.n} random `mobile32` networks at 3×32×32 (Optuna RandomSampler, seed {args.seed}), default latency "
        "target (ONNX Runtime, batch 1, 1 thread, float32, the quiet-chunk median protocol). The agent is the "
        f"single-file agent run without torch, pinned with `taskset -c {args.core}`; local measurements run in the "
        f"benchmark process pinned to the same core, never at the same time as the agent's. Device: {fp['cpu_model']}, "
        f"onnxruntime {fp['onnxruntime']}.",
        "",
        f"**Load**: the machine has {os.cpu_count()} cores; 1-minute load average at start, between the parts and "
        f"at the end: {loads} (the benchmark itself keeps about one core busy).",
        "",
        "## Results",
        "",
        "| what | result | goal | |",
        "|---|---|---|---|",
        f"| agent vs local, same core: Kendall τ | {s['tau']:.3f} | ≥ {GOALS['tau']} | {_met(s['tau'] >= GOALS['tau'])} |",
        f"| agent vs local: median \\|Δ\\| / latency (max) | {100 * s['median_delta']:.1f} % ({100 * s['max_delta']:.0f} %) "
        "| — | |",
        f"| noise floor, local vs local again on the same core: Kendall τ / median \\|Δ\\| | {s['tau_floor']:.3f} / "
        f"{100 * s['median_floor']:.1f} % | — | |",
        f"| table calibrated through the agent on {args.n_calib} networks: {s['table_n_held_out']} unseen networks "
        f"within ±10 % | {100 * s['table_within_10pct']:.0f} % | ≥ {100 * GOALS['within10']:.0f} % "
        f"| {_met(s['table_within_10pct'] >= GOALS['within10'])} |",
        f"| same: Kendall τ predicted vs measured on the agent | {s['table_kendall_tau']:.3f} | — | |",
        "",
        "More:",
        "",
        f"- Networks whose two measurements differ by more than 5 %: {100 * s['over5']:.0f} %; median agent/local "
        f"ratio {s['agent_over_local']:.3f} (the agent adds no per-call cost: it times calls inside its own process).",
        f"- Table: {s['table_entries']} entries, calibrated and judged in {s['table_s']:.0f} s through the agent "
        f"(median \\|error\\| on the unseen networks {100 * s['table_median_abs_rel_error']:.1f} %).",
        "",
        "## Goals",
        "",
    ]
    unmet = []
    if s["tau"] < GOALS["tau"]:
        unmet.append(
            f"- τ {s['tau']:.3f} < {GOALS['tau']}: two local measurements of the same networks on the same core "
            f"agree only to τ {s['tau_floor']:.3f} at this load, so the agent is held back by the machine, not by "
            "how it measures (median agent/local ratio above). Many of these networks lie within a few percent of "
            "each other, and other processes slow the core in phases as long as a measurement."
        )
    if s["table_within_10pct"] < GOALS["within10"]:
        unmet.append(
            f"- {100 * s['table_within_10pct']:.0f} % within ±10 % < {100 * GOALS['within10']:.0f} %: the table's "
            "entries and the networks it is judged on are single measurements on a loaded machine (two local "
            f"measurements of a network already differ by {100 * s['median_floor']:.1f} % in the median), and "
            "each table entry is timed for at most 0.5 s; per-part sums also miss fusions across block boundaries. "
            "`benchmarks/results/latency.md` reached 97 % with the same predictor at load ~4."
        )
    lines += unmet or ["Both goals were met in this run."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
