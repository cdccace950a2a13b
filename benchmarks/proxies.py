#!/usr/bin/env python
"""Zero-cost proxies: do they rank architectures like training does, and does screening pay?

Part 1 (correlation): ``--n-archs`` random architectures of the config's space (within its
params/MACs budget) on the config's data; for each, every registered proxy on the untrained
network (value and cost), the brief accuracy (the study's recipe) and the accuracy after
5x the epochs. Kendall τ and Spearman ρ of each proxy, ``params`` the baseline.

Part 2 (search gain): for each of ``--seeds`` seeds, a study with screening off and one with
``screen: {proxy: auto, pool: 4}``, arms alternated, each for ``--budget-s`` seconds of wall
time; the hypervolume of (accuracy ↑, latency ↓) over wall time, one reference for all runs.

    python benchmarks/proxies.py --config configs/default.yaml                       # full: ~hours
    python benchmarks/proxies.py --n-archs 4 --seeds 1 --budget-s 30                 # smoke
    python benchmarks/proxies.py --part correlation --n-archs 30 --sampler-seed 1 &   # two cores: two halves
    python benchmarks/proxies.py --part correlation --n-archs 30 --sampler-seed 2
    python benchmarks/proxies.py --part search; python benchmarks/proxies.py --part table

Results: ``benchmarks/results/proxies.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import timm
import torch
from optuna.trial import TrialState
from scipy import stats

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import parse
from blocknas.search.data import load_data
from blocknas.search.report import hypervolume_2d
from blocknas.search.study import LATENCY_ATTR, StudyConfig, load_study_config, run_search
from blocknas.search.study.attrs import SCREEN_POOL_ATTR
from blocknas.search.training import list_proxies, proxy_batch, score_proxies, seed_everything, train_briefly
from blocknas.spaces import SearchSpace

RESULTS = Path(__file__).resolve().parent / "results"


def collect_rows(config: StudyConfig, n_archs: int, factor: int, seed: int, rows_file: Path) -> None:
    """Score and train ``n_archs`` random architectures (sampler seed ``seed``), one JSON line each in ``rows_file``.

    Resumable: the rows of this sampler seed already in the file are kept and their
    architectures skipped (the sampler's sequence is fixed by its seed). Several processes with
    different seeds may append to one file; an architecture another one already has is skipped.
    """
    space = SearchSpace.load(config.space_path())
    data = load_data(config.data, input_size=space.input_size, in_chans=space.in_chans)
    space = space.for_data(data)
    batch = proxy_batch(data, seed=config.seed)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    limits = config.constraints.active()
    mine = sum(1 for r in read_rows(rows_file) if r["sampler_seed"] == seed)
    accepted = 0
    while accepted < n_archs:
        arch = space.sample(sampler.ask())
        cost = arch.cost()
        if cost.params > limits.get("params", float("inf")) or cost.macs > limits.get("macs", float("inf")):
            continue
        accepted += 1
        if accepted <= mine or arch.short_hash() in {r["arch"] for r in read_rows(rows_file)}:
            continue  # done before this resume, or by another process
        seed_everything(config.seed)
        model = timm.create_model("blocknet", arch=arch)
        scores = score_proxies(model, batch, list_proxies(), seed=config.seed)
        brief = train_briefly(model, data, config.train, seed=config.seed).val_accuracy
        seed_everything(config.seed)
        longer_cfg = dataclasses.replace(config.train, epochs=config.train.epochs * factor)
        longer = train_briefly(timm.create_model("blocknet", arch=arch), data, longer_cfg, seed=config.seed)
        row = {
            "sampler_seed": seed,
            "arch": arch.short_hash(),
            "params": cost.params,
            "brief": brief,
            "longer": longer.val_accuracy,
            **{f"proxy.{k}": v.value for k, v in scores.items()},
            **{f"ms.{k}": v.ms for k, v in scores.items()},
        }
        with rows_file.open("a") as f:  # one short line per write: appends from two processes do not interleave
            f.write(json.dumps(row) + "\n")
        print(
            f"seed {seed} arch {accepted}/{n_archs}: brief {brief:.3f}, {factor}x {longer.val_accuracy:.3f}", flush=True
        )


def read_rows(rows_file: Path) -> list[dict]:
    """The rows in ``rows_file`` (none if it does not exist), the first of each architecture."""
    if not rows_file.exists():
        return []
    rows, seen = [], set()
    for line in rows_file.read_text().splitlines():
        row = json.loads(line)
        if row["arch"] not in seen:
            seen.add(row["arch"])
            rows.append(row)
    return rows


def correlation_table(rows: list[dict], factor: int) -> dict:
    """Each proxy's Kendall τ and Spearman ρ against brief and ``factor``x accuracy, and its cost."""
    table = {}
    for name in list_proxies():
        xs = [r[f"proxy.{name}"] for r in rows]
        ms = [r[f"ms.{name}"] for r in rows]
        entry = {"ms_median": statistics.median(ms), "ms_max": max(ms)}
        for target in ("brief", "longer"):
            ys = [r[target] for r in rows]
            tau, tau_p = stats.kendalltau(xs, ys)
            rho, rho_p = stats.spearmanr(xs, ys)
            entry[target] = {"tau": float(tau), "tau_p": float(tau_p), "rho": float(rho), "rho_p": float(rho_p)}
        table[name] = entry
    brief, longer = [r["brief"] for r in rows], [r["longer"] for r in rows]
    fidelity = {"tau": float(stats.kendalltau(brief, longer)[0]), "rho": float(stats.spearmanr(brief, longer)[0])}
    return {"n": len(rows), "factor": factor, "rows": rows, "proxies": table, "brief_vs_longer": fidelity}


def search_part(config: StudyConfig, seeds: int, budget_s: float) -> dict:
    runs = []
    for seed in range(seeds):
        arms = [("off", None), ("auto_k4", {"proxy": "auto", "pool": 4})]
        for label, screen in arms if seed % 2 == 0 else arms[::-1]:  # alternated: neither arm always runs first
            with tempfile.TemporaryDirectory() as folder:
                data = {
                    **config.to_dict(),
                    "name": f"proxies-{label}-{seed}",
                    "seed": seed,
                    "screen": screen,
                    "n_trials": 10_000,
                    "timeout_s": budget_s,
                    "baselines": [],
                    "runs_dir": folder,
                    "storage": None,
                    "tracking_uri": None,
                    "export_dir": str(Path(folder) / "discovered"),
                }
                study_config = parse(StudyConfig, data)
                start = time.time()
                result = run_search(study_config, progress=False)
                wall = time.time() - start
                trials = result.study.get_trials(deepcopy=False)
                runs.append(
                    {
                        "arm": label,
                        "seed": seed,
                        "wall_s": wall,
                        "start": start,
                        "trained": sum(t.state == TrialState.COMPLETE for t in trials),
                        "screened_out": sum(
                            t.user_attrs.get(SCREEN_POOL_ATTR, 1) - 1
                            for t in trials
                            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                        ),
                        "points": [
                            (t.datetime_complete.timestamp() - start, t.values[0], t.user_attrs[LATENCY_ATTR])
                            for t in trials
                            if t.state == TrialState.COMPLETE
                        ],
                    }
                )
                print(f"seed {seed} {label}: {runs[-1]['trained']} trained in {wall:.0f} s", flush=True)
    latencies = [p[2] for r in runs for p in r["points"]]
    reference = (0.0, max(latencies, default=1.0) * 1.1)
    for r in runs:
        points = sorted(r["points"])
        r["hv_final"] = hypervolume_2d([(a, lat) for _, a, lat in points], reference)
        half = [(a, lat) for t, a, lat in points if t <= budget_s / 2]
        r["hv_half"] = hypervolume_2d(half, reference)
    for r in runs:  # seconds until the run's front first reaches the same seed's unscreened final hypervolume
        plain = next(o for o in runs if o["seed"] == r["seed"] and o["arm"] == "off")
        r["t_to_plain_final"] = time_to(r["points"], plain["hv_final"], reference)
    return {"budget_s": budget_s, "reference": reference, "runs": runs}


def time_to(points: list, target: float, reference: tuple[float, float]) -> float | None:
    """Seconds until the hypervolume of ``points`` (time, accuracy, latency) first reaches ``target``."""
    reached = []
    for t, acc, lat in sorted(points):
        reached.append((acc, lat))
        if target > 0 and hypervolume_2d(reached, reference) >= target:
            return float(t)
    return None


def markdown(corr: dict, search: dict | None, config: StudyConfig, note: str) -> str:
    lines = [
        "# Zero-cost proxies\n",
        f"`python benchmarks/proxies.py` on `{config.source}` (space `{config.space}`, data `{config.data.name}`), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads. "
        f"{note}\n",
        f"## Correlation over {corr['n']} architectures (brief = the study's recipe; {corr['factor']}x = "
        f"{corr['factor']} times the epochs)\n",
        f"| proxy | τ brief | p | ρ brief | p | τ {corr['factor']}x | p | ρ {corr['factor']}x | p | ms median | ms max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, e in sorted(corr["proxies"].items(), key=lambda item: (item[0] != "params", item[0])):
        b, lo = e["brief"], e["longer"]
        label = f"{name} (baseline)" if name == "params" else name
        lines.append(
            f"| {label} | {b['tau']:+.3f} | {b['tau_p']:.2g} | {b['rho']:+.3f} | {b['rho_p']:.2g} | "
            f"{lo['tau']:+.3f} | {lo['tau_p']:.2g} | {lo['rho']:+.3f} | {lo['rho_p']:.2g} | "
            f"{e['ms_median']:.0f} | {e['ms_max']:.0f} |"
        )
    fid = corr["brief_vs_longer"]
    lines.append(
        f"\nBrief vs {corr['factor']}x accuracy over the same architectures: Kendall τ {fid['tau']:+.3f}, Spearman ρ "
        f"{fid['rho']:+.3f}. Costs: ms per network on one thread, the proxy's own forward/backward passes on one "
        "batch of 32 images. Rows: `proxies.rows.jsonl`."
    )
    if search is None:
        return "\n".join([*lines, "\n## Search gain\n", "Not run yet (`--part search`)."]) + "\n"
    lines += [
        f"\n## Search gain: screening `auto`, K=4, vs off ({search['budget_s']:.0f} s per run, arms alternated)\n",
        f"Hypervolume of (accuracy, latency) against the reference {tuple(round(v, 4) for v in search['reference'])}.\n",
        "| seed | arm | trained | screened out | HV at half budget | HV at budget | s to the unscreened final HV |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in search["runs"]:
        reached = "not reached" if r["t_to_plain_final"] is None else f"{r['t_to_plain_final']:.0f}"
        lines.append(
            f"| {r['seed']} | {r['arm']} | {r['trained']} | {r['screened_out']} | {r['hv_half']:.4g} | "
            f"{r['hv_final']:.4g} | {reached} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--n-archs", type=int, default=60)
    parser.add_argument("--factor", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=540.0)
    parser.add_argument("--out", default=str(RESULTS / "proxies.md"))
    parser.add_argument("--note", default="", help="a line about the setup, written into the results")
    parser.add_argument(
        "--part", choices=("correlation", "search", "table", "all"), default="all",
        help="correlation: collect rows only (resumable; run several with other --sampler-seed); table: the "
        "results from the rows so far; search: the search part (kept in the JSON file beside --out)",
    )  # fmt: skip
    parser.add_argument("--sampler-seed", type=int, default=1, help="seed of the random architectures (correlation)")
    args = parser.parse_args(argv)
    config = load_study_config(args.config)
    torch.set_num_threads(1)  # proxy costs are per network on one thread, as the study's training runs
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store, rows_file = out.with_suffix(".json"), out.with_suffix(".rows.jsonl")
    if args.part in ("correlation", "all"):
        collect_rows(config, args.n_archs, args.factor, args.sampler_seed, rows_file)
        if args.part == "correlation":
            return 0
    results = json.loads(store.read_text()) if store.exists() and args.part != "all" else {}
    if args.part in ("search", "all"):
        results["search"] = search_part(config, args.seeds, args.budget_s)
    rows = read_rows(rows_file)
    if len(rows) < 3:
        parser.error(f"{rows_file} holds {len(rows)} rows: run --part correlation first")
    results["correlation"] = correlation_table(rows, args.factor)
    results["note"] = args.note or results.get("note", "")
    store.write_text(json.dumps(results, indent=1))
    out.write_text(markdown(results["correlation"], results.get("search"), config, results["note"]))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
