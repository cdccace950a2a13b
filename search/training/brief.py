"""Brief training: a few epochs (or seconds) on an in-memory ``DataSplit``, then validation top-1.

Reproducibility contract: ``train_briefly(..., seed=s)`` fixes the order of the
mini-batches with its own ``torch.Generator``. It does not touch the global RNGs, so the
caller seeds model initialization (and dropout / drop-path) by calling
:func:`seed_everything` with the same seed *before building the model*::

    seed_everything(seed)
    model = timm.create_model("blocknet", arch=arch)
    result = train_briefly(model, data, cfg, seed=seed)

On CPU, the same seed, model, data, config and thread count give bitwise-identical
results; on CUDA, cuDNN kernel choice may add run-to-run noise. A ``time_budget_s`` stop
depends on the wall clock and so is not reproducible.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from blocknas.blocks import ConfigError
from blocknas.blocks.schema import check_range
from blocknas.search.data import DataSplit
from blocknas.search.latency_gate import default_gate
from blocknas.search.threads import MAX_THREADS, pinned_threads

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_EPOCHS",
    "MAX_TIME_BUDGET_S",
    "BriefTrainer",
    "DivergedError",
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "resolve_device",
    "seed_everything",
    "train_briefly",
    "training_threads",
]

log = logging.getLogger(__name__)

MAX_EPOCHS = 10_000
"""Most epochs of a training run."""
MAX_BATCH_SIZE = 65_536
"""Largest training or evaluation batch."""
MAX_TIME_BUDGET_S = 7 * 24 * 3600.0
"""Longest time budget of one training run: a week."""


@dataclass(frozen=True)
class TrainConfig:
    """How long and how to train each candidate.

    The learning-rate schedule is planned for ``epochs``; ``time_budget_s`` (checked after
    every step, evaluation time included) ends training early and truncates it. ``amp``
    only takes effect on CUDA (bf16 where supported, else fp16 with a gradient scaler).
    ``threads`` pins torch's intra-op threads while training (restored after): CPU results
    depend on the thread count, so pin it when a trial must reproduce bit for bit elsewhere.

    Attributes:
        epochs: Passes over the training images; the schedule is planned for this many.
        time_budget_s: Stop training after this many seconds, evaluation included (null: no limit).
        batch_size: Training images per step.
        optimizer: ``adamw`` or ``sgd`` (with Nesterov momentum).
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay (AdamW) or L2 penalty (SGD).
        momentum: SGD's momentum (AdamW ignores it).
        schedule: ``cosine`` (to zero after the warm-up), ``constant`` (after the warm-up) or
            ``onecycle`` (PyTorch's ``OneCycleLR``, which has its own warm-up).
        warmup_epochs: Linear warm-up, in epochs (fractions allowed).
        label_smoothing: Cross-entropy label smoothing.
        channels_last: Train in the channels-last memory format.
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler); no effect on the CPU.
        device: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:<n>``.
        eval_batch_size: Validation images per forward pass.
        threads: torch's intra-op threads while training, restored after (null: the process's setting).
        ema_decay: Decay of an exponential moving average of the weights, validated beside them
            (null: none; ``score: ema_accuracy`` needs it).
    """

    epochs: int = 3
    time_budget_s: float | None = None
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    channels_last: bool = True
    amp: bool = True
    device: str = "auto"
    eval_batch_size: int = 256
    threads: int | None = None
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_range(self.threads, "threads", 1, MAX_THREADS, hint=" (or null: the process's setting)")
        check_range(self.epochs, "epochs", 1, MAX_EPOCHS)
        for key in ("batch_size", "eval_batch_size"):
            check_range(getattr(self, key), key, 1, MAX_BATCH_SIZE)
        if self.time_budget_s is not None:
            check_range(self.time_budget_s, "time_budget_s", 0, MAX_TIME_BUDGET_S, above=True, hint=" (or null)")
        if self.lr <= 0:
            raise ConfigError(f"{self.lr} must be > 0", path="lr")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"{self.ema_decay} must be in (0, 1), e.g. 0.99 (or null: no EMA)", path="ema_decay")
        if self.weight_decay < 0:
            raise ConfigError(f"{self.weight_decay} must be >= 0", path="weight_decay")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{self.momentum} must be in [0, 1)", path="momentum")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"{self.warmup_epochs} must be in [0, epochs={self.epochs})", path="warmup_epochs")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{self.label_smoothing} must be in [0, 1)", path="label_smoothing")
        try:
            resolve_device(self.device)
        except ValueError as exc:
            raise ConfigError(str(exc), path="device") from None


@dataclass(frozen=True)
class EpochStats:
    """One epoch: running train loss/accuracy (train mode, smoothed loss), then validation."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """Final validation top-1 and loss, the per-epoch curve and what it cost."""

    val_accuracy: float
    val_loss: float
    epochs: tuple[EpochStats, ...]
    train_seconds: float
    steps: int
    device: str
    stopped_by_budget: bool = False
    ema_val_accuracy: float | None = None


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; training stopped at that step."""

    def __init__(self, message: str, *, epoch: int, step: int, loss: float) -> None:
        super().__init__(message)
        self.epoch, self.step, self.loss = epoch, step, loss


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (all devices); call before building a model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise ``torch.device(spec)``.

    Raises:
        ValueError: the string is not a device, or names CUDA on a machine without it.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ValueError(f"invalid device {spec!r}: {exc}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


@dataclass(frozen=True)
class _Runtime:
    """Where and how tensors run: device, autocast dtype (None: full precision), memory format."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def create(cls, device: torch.device, *, amp: bool, channels_last: bool) -> _Runtime:
        amp_dtype = None
        if amp and device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, amp_dtype, channels_last)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: str | torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy (no label smoothing) and top-1 accuracy of ``model`` on ``(x, y)``.

    The model runs in eval mode under ``torch.inference_mode`` and is returned to the mode
    it was in.
    """
    runtime = _Runtime.create(torch.device(device), amp=amp, channels_last=channels_last)
    return _evaluate(model.to(runtime.device), x, y, batch_size, runtime)


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, runtime: _Runtime
) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=runtime.device, dtype=torch.float64)
    correct = torch.zeros((), device=runtime.device, dtype=torch.int64)
    gate = default_gate()  # validation, like training, pauses between batches while latency is measured
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            yb = y[start : start + batch_size].to(runtime.device, non_blocking=True)
            with runtime.autocast(), gate.step() if gate is not None else contextlib.nullcontext():
                logits = model(runtime.inputs(x[start : start + batch_size]))
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
            correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    return loss_sum.item() / len(y), correct.item() / len(y)


def train_briefly(
    model: nn.Module,
    data: DataSplit,
    cfg: TrainConfig,
    *,
    seed: int,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` for ``cfg.epochs`` (or until ``cfg.time_budget_s``) and validate after each epoch.

    Seed model initialization yourself with :func:`seed_everything` before building the
    model; ``seed`` here fixes the mini-batch order. The model is left in eval mode.

    Args:
        model: a classifier whose output has ``data.num_classes`` logits.
        data: in-memory train/val tensors (not modified).
        cfg: optimizer, schedule, budget and device.
        seed: seed of the data-order generator.
        on_epoch: called with each epoch's stats after its validation (e.g. for pruning or
            logging); any exception it raises propagates and ends training.
        progress: show a transient tqdm bar over epochs.

    Returns:
        The last epoch's validation loss and top-1, every epoch's stats and the cost.

    Raises:
        DivergedError: a training or validation loss became NaN or infinite.
        ConfigError: ``cfg`` is invalid.
        ValueError: the model's ``num_classes`` differs from the data's.
    """
    _check_classes(model, data)
    with training_threads(cfg):
        return BriefTrainer(model, data, cfg, seed, ema_decay=cfg.ema_decay).run(on_epoch, progress)


def training_threads(cfg: TrainConfig) -> contextlib.AbstractContextManager[object]:
    """Pin torch's intra-op threads to ``cfg.threads`` for the block (restored after); no-op when null."""
    if cfg.threads is None:
        return contextlib.nullcontext()
    return pinned_threads(cfg.threads, torch.get_num_interop_threads())


def _check_classes(model: nn.Module, data: DataSplit) -> None:
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and num_classes != data.num_classes:
        raise ValueError(
            f"the model has {num_classes} classes but dataset {data.name!r} has {data.num_classes}; "
            f"build it with num_classes={data.num_classes}"
        )


class BriefTrainer:
    """One training run; holds the optimizer, schedule and counters so each piece stays short.

    :func:`train_briefly` runs one; the full trainer subclasses it. The hooks a subclass
    may override or call, from the inside out:

    * :meth:`train_step`: one optimisation step on a mini-batch (override to augment the
      batch before it or update an EMA after it);
    * :meth:`train_epoch`: one pass over the shuffled training set;
    * :meth:`validate`: loss and top-1 of a model (the trained one, or e.g. its EMA copy)
      on the validation split, on this run's device and precision;
    * :meth:`validate_epoch`: the epoch's :class:`EpochStats`, divergence checked;
    * :meth:`run`: every epoch until done or out of time.
    """

    def __init__(
        self, model: nn.Module, data: DataSplit, cfg: TrainConfig, seed: int, *, ema_decay: float | None = None
    ) -> None:
        self.cfg, self.data = cfg, data
        self.runtime = _Runtime.create(resolve_device(cfg.device), amp=cfg.amp, channels_last=cfg.channels_last)
        self.model = model.to(self.runtime.device)
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.x_train = data.x_train.to(self.runtime.device)
        self.y_train = data.y_train.to(self.runtime.device)
        n = len(self.y_train)
        self.batch_size = min(cfg.batch_size, n)
        self.steps_per_epoch = n // self.batch_size  # the last partial batch is dropped (BatchNorm-safe)
        self.optimizer = _make_optimizer(model, cfg)
        self.scheduler = _make_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.runtime.amp_dtype == torch.float16 else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.deadline = math.inf
        # An exponential moving average of the weights, updated after every step (timm's, decay warm-up on).
        self.ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=True) if ema_decay is not None else None

    @property
    def inference_model(self) -> nn.Module:
        """What is validated as the result, kept as best and exported: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def run(self, on_epoch: Callable[[EpochStats], None] | None, progress: bool) -> TrainResult:
        start = time.perf_counter()
        if self.cfg.time_budget_s is not None:
            self.deadline = start + self.cfg.time_budget_s
        history: list[EpochStats] = []
        out_of_time = False
        with tqdm(range(self.cfg.epochs), desc="train", unit="epoch", leave=False, disable=not progress) as bar:
            for epoch in bar:
                epoch_start = time.perf_counter()
                train_loss, train_acc, out_of_time = self.train_epoch(epoch)
                stats = self.validate_epoch(epoch, train_loss, train_acc, epoch_start)
                history.append(stats)
                bar.set_postfix(loss=f"{stats.val_loss:.3f}", acc=f"{stats.val_accuracy:.3f}")
                if on_epoch is not None:
                    on_epoch(stats)
                out_of_time = out_of_time and self.steps < self.cfg.epochs * self.steps_per_epoch
                if out_of_time:
                    log.info("time budget of %s s reached after %d steps", self.cfg.time_budget_s, self.steps)
                    break
        self.model.eval()
        last = history[-1]
        ema_accuracy = self.validate(self.ema.module)[1] if self.ema is not None else None
        return TrainResult(
            val_accuracy=last.val_accuracy,
            val_loss=last.val_loss,
            epochs=tuple(history),
            train_seconds=time.perf_counter() - start,
            steps=self.steps,
            device=str(self.runtime.device),
            stopped_by_budget=out_of_time,
            ema_val_accuracy=ema_accuracy,
        )

    def train_epoch(self, epoch: int) -> tuple[float, float, bool]:
        """One pass over shuffled mini-batches; returns (mean loss, accuracy, out of time)."""
        self.model.train()
        order = torch.randperm(len(self.y_train), generator=self.generator).to(self.runtime.device)
        loss_sum, correct, seen = 0.0, 0, 0
        gate = default_gate()  # a latency measurement elsewhere on the machine pauses this loop between steps
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            with gate.step() if gate is not None else contextlib.nullcontext():
                batch_loss, batch_correct = self.train_step(self.x_train[idx], self.y_train[idx], epoch, step)
            loss_sum, correct, seen = loss_sum + batch_loss * len(idx), correct + batch_correct, seen + len(idx)
            if time.perf_counter() >= self.deadline:
                return loss_sum / seen, correct / seen, True
        return loss_sum / seen, correct / seen, False

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[float, int]:
        """One optimisation step on ``(x, y)``; returns the batch's loss and number of correct predictions."""
        with self.runtime.autocast():
            logits = self.model(self.runtime.inputs(x))
            loss = self.criterion(logits.float(), y)
        loss_value, correct = torch.stack([loss.detach(), (logits.argmax(dim=1) == y).sum().float()]).tolist()
        if not math.isfinite(loss_value):
            raise DivergedError(
                f"training diverged: loss is {loss_value} at epoch {epoch}, step {step} "
                f"(global step {self.steps}, lr {self.optimizer.param_groups[0]['lr']:.3g}); try a lower lr",
                epoch=epoch,
                step=self.steps,
                loss=loss_value,
            )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.scheduler.step()
        self.steps += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.steps)
        return loss_value, int(correct)

    def validate(self, model: nn.Module) -> tuple[float, float]:
        """Mean cross-entropy and top-1 of ``model`` on the validation split, on this run's device and precision."""
        return _evaluate(model, self.data.x_val, self.data.y_val, self.cfg.eval_batch_size, self.runtime)

    def validate_epoch(self, epoch: int, train_loss: float, train_acc: float, epoch_start: float) -> EpochStats:
        """Validate the trained model after ``epoch``; raises :class:`DivergedError` on a non-finite loss."""
        lr = float(self.scheduler.get_last_lr()[0])
        val_loss, val_acc = self.validate(self.model)
        if not math.isfinite(val_loss):
            raise DivergedError(
                f"validation loss is {val_loss} after epoch {epoch} (training loss {train_loss:.4g})",
                epoch=epoch,
                step=self.steps,
                loss=val_loss,
            )
        return EpochStats(epoch, train_loss, train_acc, val_loss, val_acc, lr, time.perf_counter() - epoch_start)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; biases and norm parameters get no weight decay (timm's grouping)."""
    groups = param_groups_weight_decay(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step schedule over ``epochs × steps_per_epoch`` steps."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle" and total >= 2:
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    cosine = cfg.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
