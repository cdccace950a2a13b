"""Cheap estimates and their agreement with the truth; the ground-truth table's rows and resume."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from blocknas.search.training.estimators import (
    fit_ranker,
    matched_tau,
    rank_agreement,
    tau_difference,
    top_overlap,
    training_speed_estimate,
)
from tests.conftest import REPO_ROOT, load_benchmark


def test_training_speed_estimate_is_minus_the_sum_of_the_losses() -> None:
    assert training_speed_estimate([2.0, 1.5, 0.5]) == -4.0
    # the faster learner (lower losses throughout) gets the higher estimate
    assert training_speed_estimate([1.0, 0.5]) > training_speed_estimate([1.2, 0.6])


@pytest.mark.parametrize("losses", [[], [1.0, math.nan], [math.inf]])
def test_training_speed_estimate_refuses_no_or_non_finite_losses(losses: list[float]) -> None:
    with pytest.raises(ValueError, match="finite"):
        training_speed_estimate(losses)


def test_top_overlap_counts_the_shared_best() -> None:
    truth = list(range(20))  # best two: 19, 18
    assert top_overlap(truth, truth, 0.1) == 1.0
    estimate = [*range(18), -1, 100]  # finds 19, misses 18
    assert top_overlap(estimate, truth, 0.1) == 0.5


def test_rank_agreement_of_a_perfect_and_a_reversed_estimate() -> None:
    truth = np.linspace(0.7, 0.9, 30)
    same = rank_agreement(truth * 2, truth, n_boot=200)
    assert same.tau.value == pytest.approx(1.0) and same.tau.low == pytest.approx(1.0)
    assert same.overlap.value == 1.0
    reversed_ = rank_agreement(-truth, truth, n_boot=200)
    assert reversed_.tau.value == pytest.approx(-1.0) and reversed_.rho.high == pytest.approx(-1.0)
    with pytest.raises(ValueError, match=">= 3"):
        rank_agreement([1.0, 2.0], [1.0, 2.0])


@pytest.mark.parametrize("ties", [False, True])
def test_rank_agreement_point_values_equal_scipys(ties: bool) -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 40).astype(float) if ties else rng.normal(size=40)
    estimate = np.round(truth + rng.normal(size=40), 0 if ties else 6)
    agreement = rank_agreement(estimate, truth, n_boot=50)
    assert agreement.tau.value == pytest.approx(stats.kendalltau(estimate, truth)[0], abs=1e-12)
    assert agreement.rho.value == pytest.approx(stats.spearmanr(estimate, truth)[0], abs=1e-12)
    assert agreement.overlap.value == top_overlap(estimate, truth)
    assert agreement.tau.low <= agreement.tau.value <= agreement.tau.high


def test_fitted_ranker_recovers_a_planted_signal() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(80, 6))
    signal = features[:, 2]
    noisy_target = signal + rng.normal(scale=0.5, size=80)  # what a study sees: the signal plus trial noise
    predicted = fit_ranker(features, noisy_target)
    ranked = rank_agreement(predicted, signal, n_boot=200)
    assert ranked.tau.value > 0.7
    # the out-of-fold prediction ranks the signal better than the noisy target it was fitted on
    assert ranked.tau.value > rank_agreement(noisy_target, signal, n_boot=200).tau.value


def test_fitted_ranker_on_pure_noise_reports_no_agreement() -> None:
    rng = np.random.default_rng(1)
    features, target = rng.normal(size=(80, 6)), rng.normal(size=80)
    truth = rng.normal(size=80)  # the networks' real accuracy: unrelated to features and noisy scores alike
    ranked = rank_agreement(fit_ranker(features, target), truth, n_boot=200)
    assert abs(ranked.tau.value) < 0.2
    assert ranked.tau.low < 0 < ranked.tau.high


# -- benchmarks/groundtruth.py ----------------------------------------------------------------------------


def _row(arch_hash: str, seed: int = 0, epochs: int = 3) -> dict:
    return {
        "arch_hash": arch_hash,
        "arch": "stages: []\n",
        "seed": seed,
        "params": 1000,
        "macs": 10_000,
        "latency_ms": 0.1,
        "val_acc_curve": [0.5] * epochs,
        "train_loss_curve": [1.0] * epochs,
        "estimates": {"default": 0.4},
        "budget": {"epochs": epochs},
    }


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_groundtruth_rows_are_validated_on_load(tmp_path: Path) -> None:
    gt = load_benchmark("groundtruth")
    rows = tmp_path / "rows.jsonl"
    _write(rows, [_row("aaaa"), _row("bbbb")])
    assert [r["arch_hash"] for r in gt.read_rows(rows)] == ["aaaa", "bbbb"]
    missing = _row("cccc")
    del missing["estimates"]
    _write(rows, [_row("aaaa"), missing])
    with pytest.raises(gt.RowError, match=r"rows\.jsonl:2 \(cccc\): missing estimates"):
        gt.read_rows(rows)
    short = _row("dddd")
    short["val_acc_curve"] = [0.5, 0.6]
    _write(rows, [short])
    with pytest.raises(gt.RowError, match=r":1 \(dddd\): val_acc_curve has 2 values, expected one per epoch \(3\)"):
        gt.read_rows(rows)
    with pytest.raises(gt.RowError, match="expected one per epoch \\(10\\)"):
        _write(rows, [_row("eeee")])
        gt.read_rows(rows, epochs=10)
    rows.write_text('{"arch_hash": "ffff"\n')
    with pytest.raises(gt.RowError, match=":1: not a JSON object"):
        gt.read_rows(rows)
    _write(rows, [_row("aaaa"), _row("aaaa", seed=1), _row("aaaa")])
    with pytest.raises(gt.RowError, match=r":3 \(aaaa\): seed 0 again \(first at line 1\)"):
        gt.read_rows(rows)


def test_groundtruth_resumes_without_retraining_a_finished_row(tmp_path: Path, monkeypatch) -> None:
    gt = load_benchmark("groundtruth")
    config = str(REPO_ROOT / "configs" / "default.yaml")
    study = gt.load_study_config(config)
    all_jobs = gt.jobs(study, 2, 1, None)
    sources = [j.source for j in all_jobs]
    n_seeds = len(gt.SEED_QUESTION_SEEDS)
    latency_matched = 2 * n_seeds
    assert sources[-latency_matched - 3 : -latency_matched] == ["random:0", "random:1", "random:0"]  # second seed first
    assert all(s.startswith("seed_blocks_latency:") for s in sources[-latency_matched:])
    # 5 presets + the seed question's 4 blocks per seed + 2 samples + 1 second seed + 2 latency-matched blocks
    # per seed (standard and separable match the same width at both budgets: already listed)
    assert len({j.key for j in all_jobs}) == len(all_jobs) == 5 + 4 * n_seeds + 2 + 1 + latency_matched
    assert [j.key for j in gt.jobs(study, 2, 1, None)] == [j.key for j in all_jobs]  # fixed by its seeds
    rows = tmp_path / "rows.jsonl"
    _write(rows, [_row(h, s, epochs=10) for h, s in (j.key for j in all_jobs)])
    before = rows.read_text()

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(gt, "run_job", must_not_train)
    for shard in (0, 1):
        argv = ["collect", "--config", config, "--n-random", "2", "--second-seed", "1", "--rows", str(rows)]
        assert gt.main([*argv, "--shard", str(shard), "--shards", "2"]) == 0
    assert rows.read_text() == before


def test_peers_cifar_resnets_have_the_papers_sizes() -> None:
    import torch

    peers = load_benchmark("peers")
    sizes = {d: sum(p.numel() for p in peers.cifar_resnet(d).parameters()) for d in (8, 20)}
    assert 0.07e6 < sizes[8] < 0.09e6 and 0.26e6 < sizes[20] < 0.28e6  # He et al.: ResNet-20 0.27M
    assert peers.cifar_resnet(8)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        peers.cifar_resnet(10)


def test_matched_tau_counts_only_pairs_of_similar_latency() -> None:
    latency = [1.0, 1.05, 5.0, 5.2, 20.0]
    truth = [0.1, 0.2, 0.5, 0.4, 0.9]
    # agrees on the pair (1.0, 1.05) and disagrees on (5.0, 5.2); the far pairs do not count
    estimate = [1.0, 2.0, 3.0, 4.0, -100.0]
    tau, pairs = matched_tau(estimate, truth, latency, tolerance=0.1, n_boot=20)
    assert pairs == 2 and tau.value == 0.0
    tau, pairs = matched_tau([1.0, 2.0, 4.0, 3.0, -100.0], truth, latency, tolerance=0.1, n_boot=20)
    assert tau.value == 1.0
    with pytest.raises(ValueError, match="positive"):
        matched_tau(estimate, truth, [0.0, *latency[1:]])


def test_an_estimate_that_only_tracks_latency_ranks_nothing_at_equal_latency() -> None:
    rng = np.random.default_rng(0)
    latency = rng.uniform(1, 10, 60)
    quality = rng.normal(size=60)
    truth = latency + quality  # bigger is better, and something else matters too
    size_only = latency + rng.normal(scale=0.3, size=60)  # size, measured with a little noise
    assert rank_agreement(size_only, truth, n_boot=200).tau.value > 0.5
    blind, _ = matched_tau(size_only, truth, latency, n_boot=300)
    assert blind.low < 0 < blind.high
    seeing, _ = matched_tau(quality, truth, latency, n_boot=300)
    assert seeing.low > 0.3


def test_tau_difference_is_paired() -> None:
    rng = np.random.default_rng(1)
    truth = rng.normal(size=40)
    same = tau_difference(truth + 1, truth * 3, truth, n_boot=200)  # both rank perfectly: no difference at all
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    noisy = truth + rng.normal(scale=2.0, size=40)
    better = tau_difference(truth, noisy, truth, n_boot=300)
    assert better.value == pytest.approx(1 - stats.kendalltau(noisy, truth).statistic)
    assert better.low > 0
    with pytest.raises(ValueError, match="equally long"):
        tau_difference([1.0, 2.0, 3.0], [1.0, 2.0], [1.0, 2.0, 3.0])


def test_groundtruth_answers_the_seed_question_from_its_rows() -> None:
    gt = load_benchmark("groundtruth")
    jobs = gt.seed_question_jobs()
    assert sorted({j.source for j in jobs}) == [
        "seed_blocks:block=inverted_residual",
        "seed_blocks:block=reversed",
        "seed_blocks:block=separable",
        "seed_blocks:block=standard",
    ]
    params = {j.arch.params() for j in jobs}
    assert max(params) / min(params) < 1.1  # matched on parameters, as the ablation plans them
    planted = {"standard": 0.80, "separable": 0.83, "reversed": 0.84, "inverted_residual": 0.82}
    rows = []
    for job in jobs:
        row = _row(job.arch.short_hash(), job.seed, epochs=10)
        row["val_acc_curve"][-1] = planted[job.source.removeprefix("seed_blocks:block=")] + job.seed / 1000
        rows.append(row)
    question = gt.seed_question([*rows, _row("other", 0, epochs=10)])
    seeds = gt.SEED_QUESTION_SEEDS
    assert question["params"]["truth"]["reversed"] == {s: 0.84 + s / 1000 for s in seeds}
    # standard and separable are the same networks in both matchings; the others are not in these rows
    assert question["latency"]["truth"] == {
        "standard": {s: 0.80 + s / 1000 for s in seeds},
        "separable": {s: 0.83 + s / 1000 for s in seeds},
    }
    text = "\n".join(gt.render_seed_question({"seed_question": question}))
    assert f"| reversed − standard | {len(seeds)} | +4.00 [+4.00, +4.00]" in text
    assert "matched on params" in text and "matched on latency" in text and "Brief budget" in text


def _estimate(tau: float, diff_low: float, at_equal_latency: float, seconds: float | None, overlap: float = 0.3):
    interval = lambda v, low=None: {"value": v, "low": v - 0.1 if low is None else low, "high": v + 0.1}  # noqa: E731
    return {
        "tau": interval(tau),
        "tau_minus_default": interval(diff_low + 0.1, diff_low),
        "tau_at_equal_latency": interval(at_equal_latency),
        "overlap": interval(overlap),
        "seconds_median": seconds,
    }


def test_groundtruth_chooses_the_default_score_by_its_rule() -> None:
    gt = load_benchmark("groundtruth")
    estimators = {
        "default": _estimate(0.42, 0.0, 0.40, 30.0),
        "macs": _estimate(0.65, 0.05, 0.10, 0.0),  # ranks better, but only by size
        "slow": _estimate(0.70, 0.20, 0.60, 60.0),  # better, but twice the cost
        "noisy": _estimate(0.50, -0.05, 0.50, 10.0),  # interval of the difference covers 0
        "default_ema": _estimate(0.62, 0.02, 0.45, 30.0, overlap=0.6),
        "proxy.x": _estimate(0.55, 0.01, 0.41, 0.2),
    }
    choice = gt.choose_score(estimators, 60, 15)
    assert sorted(choice["passing"]) == ["default_ema", "proxy.x"]
    assert choice["winner"] == "default_ema"  # the higher paired difference
    assert choice["score_option"] == "ema_accuracy"
    assert choice["meets_goal"]
    text = "\n".join(gt.render_choice(choice, estimators))
    assert "**Chosen: `default_ema`** (`score: ema_accuracy`)" in text
    assert "`macs` fails only on τ at equal latency" in text and "`slow` fails only on cost" in text

    del estimators["default_ema"], estimators["proxy.x"]
    nothing = gt.choose_score(estimators, 60, 15)
    assert nothing["winner"] == "default" and nothing["score_option"] == "accuracy"
    assert not nothing["meets_goal"] and nothing["final"]
    early = gt.choose_score(estimators, 59, 15)
    assert not early["final"]
    assert "**Provisional**: the table holds 59 networks, 15 with a second seed" in "\n".join(
        gt.render_choice(early, estimators)
    )


def test_groundtruth_names_the_estimates_that_beat_params_paired() -> None:
    gt = load_benchmark("groundtruth")
    estimators = {
        name: {"tau_minus_params": {"value": low + 0.1, "low": low, "high": low + 0.2}}
        for name, low in (("params", 0.0), ("proxy.params", 0.0), ("proxy.good", 0.01), ("proxy.close", -0.01))
    }
    assert "interval above 0): `proxy.good`." in gt.beat_params_line(estimators)
    del estimators["proxy.good"]
    assert "interval above 0): none." in gt.beat_params_line(estimators)


def test_groundtruth_skips_a_job_a_live_process_claims_and_takes_a_dead_ones(tmp_path: Path, monkeypatch) -> None:
    """Processes split the job list by claims: a job claimed by a live process is left to it, one
    claimed by a dead process is taken over, and every claim is released once its row is written."""
    gt = load_benchmark("groundtruth")
    config = str(REPO_ROOT / "configs" / "default.yaml")
    study = gt.load_study_config(config)
    all_jobs = gt.jobs(study, 1, 0, None)
    rows = tmp_path / "rows.jsonl"
    *earlier, live, dead = all_jobs  # the first ones finished, the last two claimed by other processes
    _write(rows, [_row(h, s, epochs=10) for h, s in (j.key for j in earlier)])
    claims_dir = tmp_path / "rows.claims"
    for job, holder in ((live, f"{socket.gethostname()}:{os.getppid()}"), (dead, f"{socket.gethostname()}:999999999")):
        claims_dir.mkdir(exist_ok=True)
        (claims_dir / f"{job.claim_key}.0.claim").write_text(f"{holder} abcd1234 {job.source}")
    trained = []

    def fake_train(job, *args: object) -> dict:
        trained.append(job.source)
        return _row(job.key[0], job.key[1], epochs=10)

    monkeypatch.setattr(gt, "run_job", fake_train)
    assert gt.main(["collect", "--config", config, "--n-random", "1", "--second-seed", "0", "--rows", str(rows)]) == 0
    assert trained == [dead.source], "the live process's job was left to it, the dead one's taken over"
    assert sorted(p.name for p in claims_dir.iterdir()) == [f"{live.claim_key}.0.claim"]


def test_groundtruth_latency_pass_measures_every_network_and_the_table_uses_it(tmp_path: Path) -> None:
    """The quiet pass: a real ONNX Runtime measurement per network; the table uses it only when it covers all."""
    from blocknas.blocks import resolve_arch

    gt = load_benchmark("groundtruth")
    archs = [resolve_arch("blocknet_separable"), resolve_arch("blocknet_reversed")]
    rows = [{**_row(a.short_hash(), epochs=10), "arch": a.to_yaml(), "latency_ms": 9.0} for a in archs]
    rows_path, out = tmp_path / "rows.jsonl", tmp_path / "latency.json"
    _write(rows_path, rows)
    argv = ["latency", "--rows", str(rows_path), "--latency", str(out), "--rounds", "2"]
    assert gt.main([*argv, "--config", str(REPO_ROOT / "configs" / "default.yaml")]) == 0
    quiet = json.loads(out.read_text())
    assert set(quiet["networks"]) == {a.short_hash() for a in archs}
    for network in quiet["networks"].values():
        assert len(network["samples_ms"]) == 2 and 0 < network["latency_ms"] < 9.0
    used, says = gt.latencies(rows, out)
    assert used == [quiet["networks"][a.short_hash()]["latency_ms"] for a in archs] and "quiet pass" in says
    unseen = [*rows, {**_row("ffff"), "latency_ms": 3.0}]
    used, says = gt.latencies(unseen, out)
    assert used == [9.0, 9.0, 3.0] and "each row's own" in says


def test_peers_resume_from_their_records_and_read_found_networks_from_the_table(tmp_path: Path, monkeypatch) -> None:
    """A record per network and seed: a second run trains nothing; a found network the table holds is not trained."""
    from blocknas.blocks import resolve_arch

    peers = load_benchmark("peers")
    records, out = tmp_path / "peers.rows.jsonl", tmp_path / "peers.md"
    base = ["--config", str(REPO_ROOT / "configs" / "tiny.yaml"), "--epochs", "1", "--max-train-samples", "64"]
    base += ["--seeds", "1", "--rows", str(records), "--out", str(out)]
    assert peers.main([*base, "--no-found", "--models", "cifar_resnet8"]) == 0  # real training, brief recipe
    [first] = [json.loads(line) for line in records.read_text().splitlines()]
    assert first["name"] == "cifar_resnet8" and first["seed"] == 0 and 0 <= first["accuracy"] <= 1
    assert "cifar_resnet8" in out.read_text()

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished network was trained again")

    monkeypatch.setattr(peers, "train_once", must_not_train)
    before = records.read_text()
    assert peers.main([*base, "--no-found", "--models", "cifar_resnet8"]) == 0
    assert records.read_text() == before
    # The ground-truth recipe: a found network the table trained at this seed and budget is read from it.
    front = tmp_path / "front"
    front.mkdir()
    arch = resolve_arch("blocknet_separable")
    (front / "t0000_x.yaml").write_text(arch.to_yaml())
    row = {**_row(arch.short_hash(), epochs=1), "arch": arch.to_yaml(), "truth_seconds": 5.0}
    row["budget"] = {"epochs": 1, "train_images": 64}
    row["val_acc_curve"] = [0.87]
    table = tmp_path / "table.jsonl"
    _write(table, [row])
    argv = [*base, "--recipe", "groundtruth", "--front", str(front), "--models", "", "--table", str(table)]
    assert peers.main(argv) == 0
    from_table = json.loads(records.read_text().splitlines()[-1])
    assert from_table["name"] == "t0000_x" and from_table["accuracy"] == 0.87 and "from_table" in from_table
    # The quiet latency pass measures every network with a record, and the report uses its figures.
    assert peers.main([*argv, "--latency-pass"]) == 0
    quiet = json.loads(records.with_name("peers.rows.latency.json").read_text())["networks"]
    assert set(quiet) == {"t0000_x"} and len(quiet["t0000_x"]["samples_ms"]) == 5
    [reported] = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert reported["latency_ms"] == quiet["t0000_x"]["latency_ms"] != 0.1


def test_groundtruth_latency_matched_jobs_rebuild_the_recorded_architectures(tmp_path: Path) -> None:
    gt = load_benchmark("groundtruth")
    jobs = gt.latency_matched_jobs()
    assert {j.seed for j in jobs} == set(gt.SEED_QUESTION_SEEDS) and len(jobs) == 4 * len(gt.SEED_QUESTION_SEEDS)
    recorded = gt.SEED_QUESTION_LATENCY.read_text()
    wrong = tmp_path / "variants.csv"
    wrong.write_text(recorded.replace("2d99076e", "00000000"))
    with pytest.raises(ValueError, match="block=reversed rebuilds as 2d99076e, not 00000000"):
        gt.latency_matched_jobs(wrong)
