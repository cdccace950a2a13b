"""benchmarks/samplers.py's comparison: the per-seed paired difference from tpe."""

from __future__ import annotations

import pytest

from tests.conftest import load_benchmark


def _runs(values: dict[int, float]) -> list[dict]:
    return [{"seed": seed, "hv": hv} for seed, hv in values.items()]


def test_the_paired_difference_removes_what_runs_of_one_seed_share() -> None:
    samplers = load_benchmark("samplers")
    tpe = _runs({0: 0.48, 1: 0.47, 2: 0.46, 3: 0.45})
    # Each seed's level differs by far more than the sampler's steady +0.001: unpaired it is noise,
    # paired it is found.
    better = _runs({0: 0.4810, 1: 0.4711, 2: 0.4609, 3: 0.4510})
    text = samplers._paired(better, tpe)
    mean, low, high = (float(x) for x in text.replace("[", "").replace("]", "").replace(",", "").split())
    assert mean == pytest.approx(0.001, abs=1e-6)
    assert 0 < low < mean < high
    welch = samplers._versus([x["hv"] for x in better], [x["hv"] for x in tpe])
    assert float(welch.split("[")[1].split(",")[0]) < 0  # the unpaired interval covers 0
    assert samplers._paired(_runs({5: 0.5}), tpe) == "—"  # no seed in common with tpe
