"""Zero-cost proxies: hand-computed values, determinism, the trained model untouched, config checks.

Screened studies: tests/search/study/test_screening.py.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml
from torch import nn

import blocknas.blocks  # noqa: F401  (registers blocknet)
from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataSplit
from blocknas.search.study import StudyConfig
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
from tests.conftest import REPO_ROOT


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
    data = {"name": "p", "space": "tiny", "proxies": ["params", "naswot", "snip"], **overrides}
    return parse(StudyConfig, data)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"proxies": ["params", "nope"]}, "proxies\\[1\\].*unknown proxy 'nope'.*registered: .*synflow"),
        ({"screen": {"proxy": "nope", "pool": 3}}, "screen.proxy.*registered: .*zico"),
        ({"screen": {"proxy": "auto", "pool": 1}}, "screen.pool.*>= 2"),
        ({"screen": {"proxy": "auto", "pool": 257}}, "screen.pool.*<= 256"),
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
