#!/usr/bin/env python
"""Fidelity of the search: does brief-training accuracy rank architectures as longer training does?

``blocknas validate`` (:func:`blocknas.search.study.run_validation`) with the benchmark's budget:
every Pareto-front architecture (at most ``--max-front``) and ``--random`` random other complete
trials are retrained with the study's own recipe for ``--factor`` times its epochs; the result
(Kendall τ and Spearman ρ with bootstrap intervals, the seed-noise floor, the front after
longer training) is written here as well as to the study's MLflow run. Resumable, like the command.

    python benchmarks/fidelity.py --config configs/default.yaml    # after `make search`

Results: ``benchmarks/results/fidelity.md`` (and ``.json``).
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
from pathlib import Path

import optuna
import torch

from blocknas.search.study import ValidateConfig, load_study_config, run_validation

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml", help="the study's config")
    parser.add_argument("--study-name", help="override the study name")
    parser.add_argument("--storage", help="override the Optuna storage")
    parser.add_argument("--factor", type=int, default=5, help="longer budget = factor x the search's epochs")
    parser.add_argument("--random", type=int, help="random complete non-front trials (default: up to 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of non-front trials")
    parser.add_argument("--max-front", type=int, help="retrain at most this many front architectures")
    parser.add_argument("--out", default=str(RESULTS / "fidelity.md"))
    parser.add_argument("--note", default="", help="a line about the setup, written into the results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # as the search's workers; also keeps runs bitwise reproducible

    config = load_study_config(args.config).with_overrides(name=args.study_name, storage=args.storage)
    validate = ValidateConfig(epochs=config.train.epochs * args.factor, random=args.random, seed=args.seed)
    start = time.perf_counter()
    result = run_validation(dataclasses.replace(config, validate=validate), max_front=args.max_front)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    note = (
        f"{result.trained} of {result.trainings} trainings ran now, in {time.perf_counter() - start:.0f} s on "
        f"{platform.machine()} with 1 torch thread (commit {commit or 'unknown'}); MLflow run {result.run_id}. "
        f"{args.note}".strip()
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(result.validation.markdown() + "\n" + note + "\n")
    out.with_suffix(".json").write_text(json.dumps(result.validation.to_json(), indent=1))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
