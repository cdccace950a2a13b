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
    python benchmarks/proxies.py --part correlation; python benchmarks/proxies.py --part search   # in turn

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
from blocknas.search.training import list_proxies, proxy_batch, score_proxies, seed_everything, train_briefly
from blocknas.spaces import SearchSpace

RESULTS = Path(__file__).resolve().parent / "results"


def correlation_part(config: StudyConfig, n_archs: int, factor: int, seed: int) -> dict:
    space = SearchSpace.load(config.space_path())
    data = load_data(config.data, input_size=tuple(space.input_size), in_chans=space.in_chans)
    batch = proxy_batch(data, seed=config.seed)
    sampler = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    limits = config.constraints.active()
    rows: list[dict] = []
    while len(rows) < n_archs:
        arch = space.sample(sampler.ask())
        cost = arch.cost()
        if cost.params > limits.get("params", float("inf")) or cost.macs > limits.get("macs", float("inf")):
            continue
        seed_everything(config.seed)
        model = timm.create_model("blocknet", arch=arch)
        scores = score_proxies(model, batch, list_proxies(), seed=config.seed)
        brief = train_briefly(model, data, config.train, seed=config.seed).val_accuracy
        seed_everything(config.seed)
        longer_cfg = dataclasses.replace(config.train, epochs=config.train.epochs * factor)
        longer = train_briefly(timm.create_model("blocknet", arch=arch), data, longer_cfg, seed=config.seed)
        rows.append(
            {
                "arch": arch.short_hash(),
                "brief": brief,
                "longer": longer.val_accuracy,
                **{f"proxy.{k}": v.value for k, v in scores.items()},
                **{f"ms.{k}": v.ms for k, v in scores.items()},
            }
        )
        print(f"arch {len(rows)}/{n_archs}: brief {brief:.3f}, {factor}x {longer.val_accuracy:.3f}", flush=True)
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
    return {"n": len(rows), "factor": factor, "rows": rows, "proxies": table}


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
                        "screened_out": sum("screened_out_by" in t.user_attrs for t in trials),
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
        "--part", choices=("correlation", "search", "all"), default="all",
        help="run one part only; the other part's results are kept from the JSON file beside --out",
    )  # fmt: skip
    args = parser.parse_args(argv)
    config = load_study_config(args.config)
    torch.set_num_threads(1)  # proxy costs are per network on one thread, as the study's training runs
    out = Path(args.out)
    store = out.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() and args.part != "all" else {}
    if args.part in ("correlation", "all"):
        results["correlation"] = correlation_part(config, args.n_archs, args.factor, seed=1)
        results["note"] = args.note
    if args.part in ("search", "all"):
        results["search"] = search_part(config, args.seeds, args.budget_s)
    if "correlation" not in results:
        parser.error(f"{store} holds no correlation results yet: run --part correlation first")
    out.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(results, indent=1))
    out.write_text(markdown(results["correlation"], results.get("search"), config, results.get("note", args.note)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
