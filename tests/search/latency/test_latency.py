"""Latency engine: statistics on synthetic timings, runtimes agree, protocol fields, lookup table.

Nothing here asserts a speed: timings on a shared CPU are noise, only their structure is tested.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import blocknas.blocks  # noqa: F401 - registers the blocknet models
from blocknas.blocks import ArchConfig, ConfigError, parse
from blocknas.search.latency import (
    LatencyPredictor,
    LatencyResult,
    LatencyTarget,
    StopRule,
    create_runner,
    device_fingerprint,
    example_input,
    fingerprint_id,
    measure_latency,
    median_ci,
    median_ci_ranks,
    next_chunk_size,
    quiet_samples,
    sample_adaptively,
    stop_reason,
    summarize,
    summarize_chunks,
)
from blocknas.search.latency.table import _fit, overhead_part, table_parts

FAST = LatencyTarget(warmup=1, min_repeats=6, max_repeats=20, time_cap_s=0.02)
TINY_ARCH = {
    "stem": {"out_chs": 8},
    "stages": [{"block": "separable", "out_chs": 8, "depth": 1, "stride": 2}],
    "input_size": [8, 8],
    "num_classes": 4,
}


@pytest.fixture
def tiny_arch() -> ArchConfig:
    return ArchConfig.from_dict(TINY_ARCH)


@pytest.fixture
def tiny_model(tiny_arch: ArchConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("blocknet", arch=tiny_arch)


# -- statistics (pure) --------------------------------------------------------------


def test_median_ci_ranks_match_binomial_tables() -> None:
    assert median_ci_ranks(30) == (9, 20)  # x_(10), x_(21): the textbook 95% interval for n = 30
    assert median_ci_ranks(100) == (39, 60)
    assert median_ci_ranks(5) is None  # 2 / 2**5 > 5%: no 95% interval exists
    assert median_ci_ranks(6) == (0, 5)


def test_median_ci_is_order_statistics_and_covers_the_median() -> None:
    samples = np.random.default_rng(0).permutation(np.arange(1.0, 31.0))
    assert median_ci(samples) == (10.0, 21.0)
    assert median_ci([1.0, 2.0, 3.0]) == (-math.inf, math.inf)
    rng = np.random.default_rng(1)
    covered = sum(lo <= 1.0 <= hi for lo, hi in (median_ci(rng.lognormal(0.0, 0.5, 40)) for _ in range(400)))
    assert covered / 400 >= 0.93  # exact coverage is >= 95%; allow sampling slack


def test_summarize_quantiles_iqr_cv() -> None:
    s = summarize(np.arange(1.0, 101.0))
    assert s.p50_ms == s.p50_all_ms == 50.5
    assert s.p90_ms == pytest.approx(90.1)
    assert s.iqr_ms == pytest.approx(49.5)
    assert s.mean_ms == 50.5
    assert s.cv == pytest.approx(np.std(np.arange(1, 101), ddof=1) / 50.5)
    assert s.n_samples == 100
    assert s.ci_rel == pytest.approx((61 - 40) / 2 / 50.5)
    constant = summarize([2.0] * 10)
    assert (constant.iqr_ms, constant.cv, constant.ci_rel) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_quiet_chunks_exclude_slow_phases() -> None:
    rng = np.random.default_rng(0)
    quiet_a, slow, quiet_b = (list(base * (1 + 0.003 * rng.standard_normal(40))) for base in (1.0, 1.35, 1.005))
    chunks = [quiet_a, slow, quiet_b]
    assert len(quiet_samples(chunks, tolerance=0.02)) == 80
    s = summarize_chunks(chunks, tolerance=0.02)
    assert s.p50_ms == pytest.approx(1.0025, abs=0.005)
    assert s.p50_all_ms == pytest.approx(1.005, abs=0.005)
    assert s.n_samples == 120 and s.quiet_share == pytest.approx(2 / 3)
    assert s.p90_ms > 1.3  # spread statistics keep every sample
    assert summarize_chunks([slow], tolerance=0.02).p50_ms == pytest.approx(np.median(slow))


def test_stop_reason_rules() -> None:
    rule = StopRule(min_repeats=10, max_repeats=50, rel_precision=0.02, time_cap_s=1.0, min_time_s=0.2)
    tight, wide = [[1.0] * 10], [[1.0, 2.0] * 5]
    assert stop_reason([[1.0] * 9], 0.5, rule) is None  # precise, but below min_repeats
    assert stop_reason(tight, 0.1, rule) is None  # precise, but before min_time_s
    assert stop_reason(tight, 0.2, rule) == "precision"
    assert stop_reason(wide, 0.5, rule) is None
    assert stop_reason(wide, 1.0, rule) == "time_cap"
    assert stop_reason([[1.0, 2.0] * 25], 0.0, rule) == "max_repeats"
    assert stop_reason([], 5.0, rule) is None  # never stop without a sample
    assert stop_reason(tight, 0.05, StopRule(min_repeats=10, time_cap_s=0.05, min_time_s=0.2)) == "precision"


def test_next_chunk_size_respects_limits() -> None:
    rule = StopRule(min_repeats=30, max_repeats=1000, time_cap_s=1.0)  # chunks of ~1/32 s
    assert next_chunk_size(0, 0.0, rule) == 30
    assert next_chunk_size(100, 0.1, rule) == 31  # 1 ms per call
    assert next_chunk_size(300, 0.03, rule) == 312  # 0.1 ms per call
    assert next_chunk_size(50, 0.5, rule) == 30  # 10 ms per call: never below min_repeats
    assert next_chunk_size(600, 0.99, rule) == 30  # 10 ms left: the cap is overrun by one short chunk
    assert next_chunk_size(9950, 0.995, StopRule(max_repeats=100_000)) == 50  # 5 ms left at 0.1 ms per call
    assert next_chunk_size(950, 0.1, rule) == 50  # max_repeats; a remainder < min_repeats joins the chunk


class FakeClock:
    """Advances by the simulated duration of every timed call."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_timer(values: list[float], clock: FakeClock):
    source = itertools.cycle(values)

    def time_chunk(n: int) -> list[float]:
        out = [next(source) for _ in range(n)]
        clock.now += sum(out) / 1e3
        return out

    return time_chunk


@pytest.mark.parametrize(
    ("values", "reason", "n_range"),
    [
        ([1.0], "precision", (250, 290)),  # constant: stops once min_time_s (0.25 s) has passed
        ([1.0, 1.01, 0.99, 1.02, 0.98], "precision", (250, 290)),
        ([1.0, 3.0, 0.5, 7.0], "time_cap", (300, 2000)),  # spread too wide for 2% within 1 s of 0.5-7 ms calls
        ([0.01, 0.02], "max_repeats", (2000, 2000)),  # bimodal: median CI straddles both modes
    ],
)
def test_sample_adaptively_on_synthetic_sequences(values: list[float], reason: str, n_range: tuple[int, int]) -> None:
    clock = FakeClock()
    chunks, why = sample_adaptively(_fake_timer(values, clock), StopRule(), clock)
    assert why == reason
    assert n_range[0] <= sum(map(len, chunks)) <= n_range[1]
    assert all(len(c) >= 30 for c in chunks)


def test_fit_recovers_line_and_falls_back_to_constant() -> None:
    points = [(r, 1.1 * r + 0.02) for r in (0.1, 0.2, 0.4, 0.8)]
    scale, constant = _fit(points)
    assert (scale, constant) == (pytest.approx(1.1), pytest.approx(0.02))
    assert _fit([(0.1, 0.15), (0.2, 0.25)]) == (1.0, pytest.approx(0.05))


# -- runtimes -----------------------------------------------------------------------

RUNTIMES = [
    "onnxruntime",
    "torch",
    "torchscript",
    pytest.param(
        "compile",
        marks=pytest.mark.skipif(
            os.environ.get("BLOCKNAS_TEST_COMPILE") != "1",
            reason="torch.compile takes 10-30 s per network on this CPU; set BLOCKNAS_TEST_COMPILE=1 to run",
        ),
    ),
]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtimes_compute_the_same_outputs(runtime: str, tiny_model: torch.nn.Module) -> None:
    target = FAST.replace(runtime=runtime, batch_size=2)
    x = example_input((3, 8, 8), 2)
    with torch.inference_mode():
        expected = tiny_model.eval()(x).numpy()
    tiny_model.train()
    runner = create_runner(tiny_model, (3, 8, 8), target)
    np.testing.assert_allclose(runner.infer(), expected, atol=1e-4)
    times = runner.time(3)
    assert len(times) == 3 and all(t > 0 for t in times)
    assert tiny_model.training  # the caller's model is not switched to eval


def test_measure_latency_fields_and_caller_model_untouched(tiny_model: torch.nn.Module) -> None:
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    tiny_model.train()
    result = measure_latency(tiny_model, (3, 8, 8), FAST)
    assert isinstance(result, LatencyResult)
    assert 0 < result.p50_ms <= result.p90_ms
    assert result.mean_ms > 0 and result.iqr_ms >= 0 and result.cv >= 0
    assert 6 <= result.n_samples <= 20
    assert 0 < result.quiet_share <= 1 and result.p50_all_ms > 0
    assert result.stop_reason in {"precision", "time_cap", "max_repeats"}
    assert result.fingerprint["runtime"] == "onnxruntime" and result.fingerprint["threads"] == "1"
    assert len(result.fingerprint_id) == 10 and result.fingerprint_id == fingerprint_id(result.fingerprint)
    assert result.relative_to_reference is None
    metrics = result.as_metrics()
    assert {
        "latency_p50_ms",
        "latency_p90_ms",
        "latency_mean_ms",
        "latency_iqr_ms",
        "latency_cv",
        "latency_samples",
    } <= set(metrics)
    assert tiny_model.training
    assert all(torch.equal(state[k], v) for k, v in tiny_model.state_dict().items())


def test_reference_interleaving_reports_ratio(tiny_model: torch.nn.Module) -> None:
    result = measure_latency(tiny_model, (3, 8, 8), FAST.replace(reference=True))
    assert result.reference_p50_ms is not None and result.reference_p50_ms > 0
    assert result.relative_to_reference == pytest.approx(result.p50_ms / result.reference_p50_ms)
    assert "latency_relative_to_reference" in result.as_metrics()


def test_fingerprint_is_stable_and_names_settings() -> None:
    fp = device_fingerprint(FAST)
    assert fingerprint_id(fp) == fingerprint_id(device_fingerprint(FAST))
    assert {"cpu_model", "logical_cpus", "threads", "torch", "onnxruntime", "python", "runtime"} <= set(fp)
    assert fingerprint_id(device_fingerprint(FAST.replace(threads=2))) != fingerprint_id(fp)
    assert fingerprint_id({**fp, "hostname": "elsewhere"}) == fingerprint_id(fp)


def test_thread_count_restored_after_measurement(tiny_model: torch.nn.Module) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        measure_latency(tiny_model, (3, 8, 8), FAST.replace(runtime="torch", threads=1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_isolated_measurement_in_spawned_process(tiny_model: torch.nn.Module) -> None:
    for runtime in ("onnxruntime", "torch"):
        result = measure_latency(tiny_model, (3, 8, 8), FAST.replace(runtime=runtime, isolate=True))
        assert result.p50_ms > 0 and result.n_samples >= 6
        assert result.target.isolate is True
        assert result.fingerprint["runtime"] == runtime


# -- errors -------------------------------------------------------------------------


def test_unknown_runtime_is_a_clear_error(tiny_model: torch.nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"runtime: 'tensorrt' is not one of 'onnxruntime', 'torch'"):
        parse(LatencyTarget, {"runtime": "tensorrt"})
    bad = LatencyTarget(runtime="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"unknown latency runtime 'tensorrt'; choose one of: onnxruntime, torch, torchscript, compile, cuda",
    ):
        measure_latency(tiny_model, (3, 8, 8), bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error(tiny_model: torch.nn.Module) -> None:
    with pytest.raises(RuntimeError, match=r"cuda latency target requested but torch.cuda.is_available\(\) is False"):
        measure_latency(tiny_model, (3, 8, 8), FAST.replace(runtime="cuda"))


def test_target_validation_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"latency.rel_precision: 2.0 must be in \(0, 1\)"):
        parse(LatencyTarget, {"rel_precision": 2.0}, path="latency")
    with pytest.raises(ConfigError, match="dtype: onnxruntime on the CPU has no bfloat16"):
        parse(LatencyTarget, {"dtype": "bfloat16"})


# -- lookup table -------------------------------------------------------------------


def test_table_keys_separate_runtime_threads_batch(tiny_arch: ArchConfig, tmp_path: Path) -> None:
    targets = [
        FAST,
        FAST.replace(threads=2),
        FAST.replace(batch_size=4),
        FAST.replace(runtime="torch"),
        FAST.replace(dtype="float16"),
    ]
    predictors = [LatencyPredictor(t, cache_dir=tmp_path) for t in targets]
    part = table_parts(tiny_arch)[1]
    keys = {p.key(part) for p in predictors}
    assert len(keys) == len(targets)
    assert len({p.path for p in predictors}) == len(targets)
    assert json.loads(predictors[1].key(part))["threads"] == 2


def test_table_parts_cover_every_block(tiny_arch: ArchConfig) -> None:
    parts = table_parts(tiny_arch.replace(stages=[{"block": "standard", "out_chs": 8, "depth": 3, "stride": 2}]))
    assert [p.fields["kind"] for p in parts] == ["stem", "block", "block", "block", "head"]
    assert [p.output_shape for p in parts] == [(8, 8, 8), (8, 4, 4), (8, 4, 4), (8, 4, 4), (4,)]
    assert overhead_part((8, 4, 4)).fields == {"kind": "overhead", "shape": [8, 4, 4]}


def test_predictor_persists_and_is_reused_without_measuring(tiny_arch: ArchConfig, tmp_path: Path) -> None:
    first = LatencyPredictor(FAST, cache_dir=tmp_path)
    predicted = first.predict(tiny_arch)
    parts = table_parts(tiny_arch)
    n_parts = len({first.key(p) for p in [*parts, *(overhead_part(p.output_shape) for p in parts[:-1])]})
    assert predicted > 0 and first.n_measurements == n_parts
    first.predict(tiny_arch)
    assert first.n_measurements == n_parts  # in-memory reuse
    assert first.path.exists()

    second = LatencyPredictor(FAST, cache_dir=tmp_path)
    assert second.predict(tiny_arch) == predicted
    assert second.n_measurements == 0

    second.calibrate([tiny_arch])
    assert not second.calibrated and second.calibration == (1.0, 0.0), "one network is below the default minimum"
    third = LatencyPredictor(FAST, cache_dir=tmp_path, min_calibration_points=1)
    assert third.calibrated and third.calibration != (1.0, 0.0)
    assert third.n_measurements == 0


def test_calibration_points_accumulate_and_refit_once_enough(tiny_arch: ArchConfig, tmp_path: Path) -> None:
    archs = [
        tiny_arch.replace(stages=[{"block": b, "out_chs": 8, "depth": 1, "stride": 2}])
        for b in ("separable", "standard", "reversed", "inverted_residual")
    ]
    a = LatencyPredictor(FAST, cache_dir=tmp_path, min_calibration_points=3)
    b = LatencyPredictor(FAST, cache_dir=tmp_path, min_calibration_points=3)  # another worker
    raw = [a.raw_sum(arch) for arch in archs]
    assert len(set(raw)) == len(raw)
    a.add_calibration_point(archs[0], 2 * raw[0] + 0.01)
    b.add_calibration_point(archs[1], 2 * raw[1] + 0.01)
    assert b.n_calibration_points == 2 and not b.calibrated
    assert b.predict(archs[3]) == raw[3], "raw sums until enough networks are stored"
    a.add_calibration_point(archs[1], 99.0)  # b stored this network first: its point stays
    a.add_calibration_point(archs[2], 2 * raw[2] + 0.01)
    assert a.calibrated and a.calibration == (pytest.approx(2.0), pytest.approx(0.01))
    assert a.predict(archs[3]) == pytest.approx(2 * raw[3] + 0.01)
    fresh = LatencyPredictor(FAST, cache_dir=tmp_path, min_calibration_points=3)
    assert fresh.n_calibration_points == 3 and fresh.calibration == a.calibration
    assert fresh.n_measurements == 0
    with pytest.raises(ValueError, match="min_calibration_points must be >= 1, got 0"):
        LatencyPredictor(FAST, cache_dir=tmp_path, min_calibration_points=0)


def test_concurrent_writers_merge(tiny_arch: ArchConfig, tmp_path: Path) -> None:
    a, b = LatencyPredictor(FAST, cache_dir=tmp_path), LatencyPredictor(FAST, cache_dir=tmp_path)
    other = tiny_arch.replace(stages=[{"block": "reversed", "out_chs": 16, "depth": 1}])
    a.predict(tiny_arch)
    b.predict(other)  # b loaded before a wrote; its save merges a's entries
    merged = LatencyPredictor(FAST, cache_dir=tmp_path)
    merged.predict(tiny_arch)
    merged.predict(other)
    assert merged.n_measurements == 0
    assert not list(tmp_path.glob("*.tmp"))
