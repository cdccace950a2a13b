"""Zero-cost proxies: hand-computed values, determinism, the trained model untouched, screened studies."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import timm
import torch
import yaml
from mlflow.tracking import MlflowClient
from rich.console import Console
from torch import nn

import blocknas.blocks  # noqa: F401  (registers blocknet)
from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataSplit
from blocknas.search.report import print_search_summary, report_study
from blocknas.search.study import (
    SCREENED_OUT_ATTR,
    StudyConfig,
    proxy_correlations,
    run_search,
    trial_counts,
)
from blocknas.search.tracking import PARENT_RUN_ATTR
from blocknas.search.training import (
    DEFAULT_PROXIES,
    TrainConfig,
    UnknownProxyError,
    get_proxy,
    list_proxies,
    score_proxies,
    seed_everything,
    train_briefly,
)

from .conftest import REPO_ROOT


def linear(weight: list[list[float]], bias: list[float] | None = None) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def run(name: str, model: nn.Module, x: list[list[float]], y: list[int]) -> float:
    return score_proxies(model, (torch.tensor(x), torch.tensor(y)), [name])[name].value


def test_registry_lists_the_proxies() -> None:
    assert {"params", "synflow", "naswot", "grad_norm", "snip", "zico"} <= set(list_proxies())
    assert set(DEFAULT_PROXIES) <= set(list_proxies())
    with pytest.raises(UnknownProxyError, match=r"registered: .*naswot"):
        get_proxy("nope")


def test_params_counts_weights_and_biases() -> None:
    assert run("params", linear([[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0]), [[1.0, 0.0]], [0]) == 6


def test_synflow_is_sum_of_abs_weights_for_one_linear_layer() -> None:
    # R = Σ|w| + |b| on an all-ones input; ∂R/∂w_i = 1, so the score is Σ|w_i| = 1 + 2.
    assert run("synflow", linear([[1.0, -2.0]], [0.5]), [[7.0, 9.0]], [0]) == pytest.approx(3.0)


def test_naswot_is_log_det_of_agreement_kernel() -> None:
    # Codes of x=1 and x=-1 through w=[1,-1] and ReLU: [1,0] and [0,1]; K = [[2,0],[0,2]], log det = log 4.
    model = nn.Sequential(linear([[1.0], [-1.0]], [0.0, 0.0]), nn.ReLU())
    assert run("naswot", model, [[1.0], [-1.0]], [0, 1]) == pytest.approx(math.log(4.0))


def test_grad_norm_of_zero_layer() -> None:
    # Uniform softmax, y=0: ∂L/∂z = [-0.5, 0.5]; ∂L/∂W = outer(∂L/∂z, [1, 0]); ‖·‖ = √0.5.
    model = linear([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0])
    assert run("grad_norm", model, [[1.0, 0.0]], [0]) == pytest.approx(math.sqrt(0.5))


def test_snip_is_abs_weight_times_gradient() -> None:
    # z = [1, 0]; p_1 = 1/(e+1); only W_00 = 1 is non-zero and ∂L/∂W_00 = p_0 - 1 = -1/(e+1).
    model = linear([[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0])
    assert run("snip", model, [[1.0, 0.0]], [0]) == pytest.approx(1.0 / (math.e + 1.0))


def test_zico_is_log_sum_of_mean_over_std_of_gradients() -> None:
    # Halves x=1 and x=2 (y=0) through a zero Linear(1→2): g = ±0.5 and ±1; mean|g| = 0.75, σ = 0.25 → 3 + 3.
    model = linear([[0.0], [0.0]], [0.0, 0.0])
    assert run("zico", model, [[1.0], [2.0]], [0, 0]) == pytest.approx(math.log(6.0))


def tiny_net() -> nn.Module:
    seed_everything(0)
    stages = [{"block": "inverted_residual", "out_chs": 16, "stride": 2}, {"block": "separable", "out_chs": 16}]
    arch = {"stages": stages, "in_chans": 1, "input_size": [16, 16], "num_classes": 10, "head": {"drop_rate": 0.2}}
    return timm.create_model("blocknet", arch=arch)


def test_proxies_are_deterministic_and_leave_the_model_and_its_training_alone() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(32, 1, 16, 16), torch.randint(0, 10, (32,))
    data = DataSplit(x, y, x[:16], y[:16], num_classes=10, in_chans=1, mean=(0.0,), std=(1.0,), name="t")
    model = tiny_net()
    before = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    first = score_proxies(model, (x, y), list_proxies(), seed=3)
    assert torch.equal(rng, torch.get_rng_state())
    second = score_proxies(model, (x, y), list_proxies(), seed=3)
    assert {k: v.value for k, v in first.items()} == {k: v.value for k, v in second.items()}
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters()) and model.training

    cfg = TrainConfig(epochs=1, batch_size=8)
    with_proxies = train_briefly(model, data, cfg, seed=0)
    without = train_briefly(tiny_net(), data, cfg, seed=0)
    assert with_proxies.val_accuracy == without.val_accuracy and with_proxies.val_loss == without.val_loss


def study_config(**overrides: object) -> StudyConfig:
    data = {
        "name": "p",
        "space": "tiny",
        "data": {"name": "synthetic", "max_train_samples": 200, "max_val_samples": 100},
        "train": {"epochs": 1, "batch_size": 50},
        "latency": {"time_cap_s": 0.05, "min_repeats": 3, "warmup": 1},
        "n_trials": 2,
        "sampler": "random",
        "proxies": ["params", "naswot", "snip"],
        "screen": {"proxy": "snip", "pool": 3},
    }
    data.update(overrides)
    return parse(StudyConfig, data)


def test_screened_study_trains_only_the_kept_candidates_and_resumes(in_tmp_dir: Path) -> None:
    # A params budget between the tiny space's smallest and largest networks: some candidates are over it.
    config = study_config(constraints={"params": 6000})
    result = run_search(config, progress=False)
    study = result.study
    assert trial_counts(study) == (2, 0)
    trials = study.get_trials(deepcopy=False)
    screened = [t for t in trials if SCREENED_OUT_ATTR in t.user_attrs]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    over = [t for t in trials if "over_budget" in t.user_attrs]
    assert len(trials) == 2 * 3 and screened
    assert all(t.state == optuna.trial.TrialState.PRUNED and "train_seconds" not in t.user_attrs for t in screened)
    assert all("proxy.snip" not in t.user_attrs for t in over)  # budgets first: never built, never scored
    assert not any(SCREENED_OUT_ATTR in t.user_attrs for t in over)
    for t in complete:  # the kept one beat its pool's other feasible candidates on snip
        pool = [o for o in screened if o.user_attrs["screen.kept"] == t.number]
        assert all(o.user_attrs["proxy.snip"] <= t.user_attrs["proxy.snip"] for o in pool)
        assert {"proxy.params", "proxy.naswot", "proxy.snip"} <= set(t.user_attrs)

    client = MlflowClient(result.tracking_uri)
    parent = client.get_run(study.user_attrs[PARENT_RUN_ATTR])
    runs = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    states = [r.data.tags.get("blocknas.state") for r in runs]
    assert states.count("screened_out") == len(screened) and states.count("complete") == len(complete)
    screened_runs = [r for r in runs if r.data.tags.get("blocknas.state") == "screened_out"]
    assert all("train_seconds" not in r.data.metrics and "proxy.snip" in r.data.metrics for r in screened_runs)
    complete_runs = [r for r in runs if r.data.tags.get("blocknas.state") == "complete"]
    assert all("proxy.naswot.ms" in r.data.metrics for r in complete_runs)
    assert next(c.proxy for c in proxy_correlations(trials)) == "params"

    grown = run_search(study_config(constraints={"params": 6000}, n_trials=3), progress=False)
    assert trial_counts(grown.study) == (3, 0) and len(grown.study.trials) == 3 * 3

    console = Console(record=True, width=160)
    print_search_summary(grown, config, console)
    text = console.export_text()
    assert "Kendall τ" in text and "params (baseline)" in text and "snip" in text
    report = report_study("p", storage_url=config.storage_url, tracking_uri=grown.tracking_uri)
    summary = (report.folder / "summary.md").read_text()
    assert "## Zero-cost proxies vs brief accuracy" in summary and "| snip |" in summary
    assert "Screened out (PRUNED, never trained):" in summary


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"proxies": ["params", "nope"]}, "proxies\\[1\\].*unknown proxy 'nope'.*registered: .*synflow"),
        ({"screen": {"proxy": "nope", "pool": 3}}, "screen.proxy.*registered: .*zico"),
        ({"screen": {"proxy": "auto", "pool": 1}}, "screen.pool.*>= 2"),
    ],
)
def test_bad_proxy_settings_are_config_errors(setting: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        study_config(**setting)


def test_bad_screen_setting_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "space": "tiny", "screen": {"proxy": "nope", "pool": 4}}))
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "search.py"), "--config", str(path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "unknown proxy 'nope'" in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
