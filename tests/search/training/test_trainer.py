"""Brief training on in-memory data: learning, reproducibility, budgets, schedules, divergence, callbacks."""

from __future__ import annotations

import math
import time

import pytest
import timm
import torch
from torch import nn

import blocknas.blocks  # noqa: F401  (registers the blocknet models)
from blocknas.blocks import ConfigError, parse
from blocknas.search.data import DataConfig, DataSplit, load_data
from blocknas.search.training import (
    DivergedError,
    EpochStats,
    TrainConfig,
    TrainResult,
    evaluate,
    seed_everything,
    train_briefly,
)

FAST = TrainConfig(epochs=2, batch_size=16, lr=1e-2)


def tiny_net(seed: int, *, num_classes: int = 10, size: int = 16) -> nn.Module:
    seed_everything(seed)
    arch = {
        "stem": {"out_chs": 8},
        "stages": [
            {"block": "separable", "out_chs": 16, "stride": 2},
            {"block": "separable", "out_chs": 32, "stride": 2},
        ],
        "num_classes": num_classes,
        "input_size": [size, size],
    }
    return timm.create_model("blocknet", arch=arch)


@pytest.fixture(scope="module")
def synthetic() -> DataSplit:
    return load_data(DataConfig(name="synthetic", num_samples=512, num_classes=10), input_size=(16, 16))


def _curve(result: TrainResult) -> list[tuple[float, ...]]:
    return [(e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.lr) for e in result.epochs]


def test_tiny_net_beats_chance(synthetic: DataSplit) -> None:
    result = train_briefly(tiny_net(0), synthetic, FAST, seed=0, progress=True)
    assert result.val_accuracy > 0.3  # chance is 0.1
    assert len(result.epochs) == 2 and [e.epoch for e in result.epochs] == [0, 1]
    assert result.steps == 2 * (410 // 16) and result.device == "cpu" and not result.stopped_by_budget
    assert result.val_accuracy == result.epochs[-1].val_accuracy
    assert result.epochs[1].train_loss < result.epochs[0].train_loss


def test_same_seed_same_result_other_seed_differs(synthetic: DataSplit) -> None:
    first = train_briefly(tiny_net(1), synthetic, FAST, seed=1)
    again = train_briefly(tiny_net(1), synthetic, FAST, seed=1)
    other = train_briefly(tiny_net(2), synthetic, FAST, seed=2)
    assert _curve(first) == _curve(again)  # bitwise: float equality
    assert _curve(first) != _curve(other)


def test_seed_controls_data_order_alone(synthetic: DataSplit) -> None:
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2)
    first = train_briefly(tiny_net(0), synthetic, cfg, seed=5)
    reshuffled = train_briefly(tiny_net(0), synthetic, cfg, seed=6)
    assert _curve(first) != _curve(reshuffled)


def test_time_budget_stops_early(synthetic: DataSplit) -> None:
    cfg = TrainConfig(epochs=1000, batch_size=16, time_budget_s=0.3)
    start = time.perf_counter()
    result = train_briefly(tiny_net(0), synthetic, cfg, seed=0)
    assert time.perf_counter() - start < 5
    assert result.stopped_by_budget and 1 <= len(result.epochs) < 1000
    assert result.steps < 1000 * (410 // 16) and math.isfinite(result.val_loss)


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "onecycle"), ("adamw", "onecycle"), ("sgd", "cosine")])
def test_optimizers_and_schedules_run(synthetic: DataSplit, optimizer: str, schedule: str) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, optimizer=optimizer, schedule=schedule, lr=0.05)
    result = train_briefly(tiny_net(0), synthetic, cfg, seed=0)
    assert math.isfinite(result.val_loss) and 0 <= result.val_accuracy <= 1
    assert result.epochs[-1].lr < 0.05 * 0.01  # both anneal to about zero


def test_warmup_then_constant_lr(synthetic: DataSplit) -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, schedule="constant", warmup_epochs=1.5, lr=1e-3)
    lrs = [e.lr for e in train_briefly(tiny_net(0), synthetic, cfg, seed=0).epochs]
    assert lrs[0] < 1e-3 and lrs[1] == pytest.approx(1e-3)


class _Overflow(nn.Module):
    """A classifier whose logits become infinite: the loss is NaN at the first step."""

    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * math.inf


def test_inf_layer_raises_diverged_at_first_step(synthetic: DataSplit) -> None:
    with pytest.raises(DivergedError, match="epoch 0, step 0") as info:
        train_briefly(_Overflow(), synthetic, FAST, seed=0)
    assert info.value.step == 0 and not math.isfinite(info.value.loss)


def test_huge_lr_raises_diverged(synthetic: DataSplit) -> None:
    calls: list[EpochStats] = []
    cfg = TrainConfig(epochs=5, batch_size=16, optimizer="sgd", lr=1e6)
    with pytest.raises(DivergedError, match=r"loss is (nan|inf)"):
        train_briefly(tiny_net(0), synthetic, cfg, seed=0, on_epoch=calls.append)
    assert not calls  # raised within the first epoch, not after training on


def test_on_epoch_exception_propagates(synthetic: DataSplit) -> None:
    seen: list[EpochStats] = []

    class Prune(Exception):
        pass

    def on_epoch(stats: EpochStats) -> None:
        seen.append(stats)
        if stats.epoch == 1:
            raise Prune

    with pytest.raises(Prune):
        train_briefly(tiny_net(0), synthetic, TrainConfig(epochs=5, batch_size=32), seed=0, on_epoch=on_epoch)
    assert [s.epoch for s in seen] == [0, 1]
    assert all(0 <= s.val_accuracy <= 1 and s.seconds > 0 for s in seen)


def test_class_count_mismatch(synthetic: DataSplit) -> None:
    with pytest.raises(ValueError, match="num_classes=10"):
        train_briefly(tiny_net(0, num_classes=7), synthetic, FAST, seed=0)


def test_evaluate_restores_mode(synthetic: DataSplit) -> None:
    model = tiny_net(0).train()
    loss, accuracy = evaluate(model, synthetic.x_val, synthetic.y_val, batch_size=50, device="cpu")
    assert model.training and loss > 0 and 0 <= accuracy <= 1
    assert evaluate(model, synthetic.x_val, synthetic.y_val, batch_size=7, device="cpu") == pytest.approx(
        (loss, accuracy), rel=1e-5
    )


def test_digits_tiny_net_learns() -> None:
    data = load_data(DataConfig(name="digits"), input_size=(16, 16))
    start = time.perf_counter()
    result = train_briefly(tiny_net(0), data, TrainConfig(epochs=3, batch_size=32, lr=1e-2), seed=0)
    assert result.val_accuracy > 0.5
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"epochs": 0}, "train.epochs"),
        ({"optimizer": "lion"}, "train.optimizer"),
        ({"warmup_epochs": 3}, "train.warmup_epochs"),
        ({"time_budget_s": 0}, "train.time_budget_s"),
        ({"label_smoothing": 1.0}, "train.label_smoothing"),
        ({"device": "tpu:banana"}, "train.device"),
    ],
)
def test_config_errors_name_the_key(data: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(TrainConfig, data, path="train")
    assert info.value.path == path


def test_threads_are_pinned_for_training_and_restored() -> None:
    data = load_data(DataConfig(name="synthetic", num_samples=128), input_size=(8, 8), in_chans=1)
    arch = {"stages": [{"block": "separable", "out_chs": 8, "stride": 2}], "input_size": [8, 8], "in_chans": 1}
    seen: list[int] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seed_everything(0)
        model = timm.create_model("blocknet", arch=arch)
        cfg = parse(TrainConfig, {"epochs": 1, "batch_size": 32, "threads": 2})
        train_briefly(model, data, cfg, seed=0, on_epoch=lambda _: seen.append(torch.get_num_threads()))
        assert seen == [2]
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ConfigError, match="threads: 0 must be >= 1"):
        parse(TrainConfig, {"threads": 0})
