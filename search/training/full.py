"""Full training of one architecture: a real budget, augmentation, EMA, checkpoints, resume, MLflow.

The training step, optimizer, schedule and validation are the brief trainer's
(:mod:`.brief`); this module adds what a long run needs around them. Reproducibility:
with the same config, seed and thread count on a CPU, a run killed at any point and
resumed with ``resume=True`` ends with the same weights as an uninterrupted run, because
the checkpoint written after every epoch holds every piece of state that moves (weights,
EMA, optimizer, schedule, data-order and augmentation generators, torch's global RNG).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from blocknas.blocks import ArchConfig, ConfigError, parse, resolve_arch
from blocknas.blocks.schema import to_plain
from blocknas.search.data import PREPROCESSING_KEY, DataConfig, DataSplit, Preprocessing, load_data
from blocknas.search.tracking import masked_yaml

from .brief import BriefTrainer, seed_everything, training_threads
from .checkpoint import CheckpointError, load_training_state, save_training_state, save_weights
from .full_config import AugmentConfig, FullTrainConfig, FullTrainResult
from .run import TrainRun

__all__ = ["FullTrainer", "RandomCropFlip", "searched_data", "train_full"]

log = logging.getLogger(__name__)

# Mirroring keeps the class of a photo or a garment; digits (MNIST, KMNIST's kana, the 8x8 digits) and
# the synthetic patterns are not mirror-symmetric.
_FLIP_SAFE = ("cifar10", "cifar100", "imagefolder", "fashion_mnist")
LAST, BEST = "last", "best"


class RandomCropFlip:
    """Random crop with zero padding and optional horizontal flip, per sample, on a whole batch.

    The randomness comes from its own CPU generator (part of the checkpoint), so it does not
    depend on the device or on the order of other random draws.
    """

    def __init__(self, *, padding: int, hflip: bool, seed: int) -> None:
        self.padding, self.hflip = padding, hflip
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = self._crop(x)
        if self.hflip:
            flip = (torch.rand(len(x), generator=self.generator) < 0.5).to(x.device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        return x

    def _crop(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.padding
        offsets = torch.randint(0, 2 * p + 1, (2, b), generator=self.generator).to(x.device)
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)
        cols = offsets[1, :, None] + torch.arange(w, device=x.device)
        padded = F.pad(x, (p, p, p, p))
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]

    @classmethod
    def create(cls, cfg: AugmentConfig, dataset: str, seed: int) -> RandomCropFlip:
        hflip = cfg.hflip if cfg.hflip is not None else dataset in _FLIP_SAFE
        return cls(padding=cfg.crop_padding, hflip=hflip, seed=seed)


class FullTrainer(BriefTrainer):
    """The brief trainer's step with augmentation before it and an EMA update after it."""

    def __init__(self, model: nn.Module, data: DataSplit, config: FullTrainConfig) -> None:
        ema_decay = config.ema.decay if config.ema.enabled else None  # ``ema:``, not ``train.ema_decay``
        super().__init__(model, data, config.train, config.seed, ema_decay=ema_decay)
        self.augment = RandomCropFlip.create(config.augment, data.name, config.seed + 1)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, epoch: int, step: int) -> tuple[float, int]:
        return super().train_step(self.augment(x), y, epoch, step)

    def epoch(self, epoch: int) -> dict[str, float]:
        """Train one epoch, validate; the record logged and checkpointed for it."""
        start = time.perf_counter()
        train_loss, train_acc, _ = self.train_epoch(epoch)
        stats = self.validate_epoch(epoch, train_loss, train_acc, start)
        record = {k: float(v) for k, v in dataclasses.asdict(stats).items() if k != "epoch"}
        if self.ema is not None:
            ema_loss, ema_acc = self.validate(self.ema.module)
            record.update(ema_val_loss=ema_loss, ema_val_accuracy=ema_acc)
        record["accuracy"] = record.get("ema_val_accuracy", record["val_accuracy"])
        record["seconds"] = time.perf_counter() - start
        return record

    def state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "data": self.generator.get_state(),
            "augment": self.augment.generator.get_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "steps": self.steps,
            "model": self.model.state_dict(),
            "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["model_ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.steps = int(state["steps"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.generator.set_state(rng["data"])
        self.augment.generator.set_state(rng["augment"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])


def train_full(config: FullTrainConfig, *, resume: bool = False, progress: bool = True) -> FullTrainResult:
    """Train ``config.arch`` on ``config.data`` for ``config.train.epochs``; checkpoint every epoch.

    Without ``config.data``, the data the architecture was searched on (:func:`searched_data`).
    Files in the output folder: ``arch.yaml`` (what was trained, classes matched to the
    data; its ``meta`` holds the data config and the :class:`Preprocessing` its inputs need),
    ``train.yaml``, ``last.pt``/``best.pt`` (resumable state, the architecture with that
    ``meta`` inside), ``best``/``last`` weights (``.safetensors``, the preprocessing in its
    header, or ``.pth``) and ``history.json``.

    Args:
        config: What to train, on what, how, and where to write.
        resume: Continue from ``<out>/last.pt`` (after a kill); the config must match it.
        progress: Show a tqdm bar over epochs.

    Raises:
        ConfigError: no architecture, a bad config, or a resume whose config differs.
        CheckpointError: a resume whose checkpoint is missing or unreadable, or a fresh run
            into a folder that already holds one.
    """
    if config.arch is None:
        raise ConfigError(
            "no architecture to train: set arch in the config or pass --arch", path="arch", source=config.source
        )
    arch = resolve_arch(config.arch)
    out = config.output_dir(arch)
    data_config = config.data or searched_data(arch, config)
    config = dataclasses.replace(config, data=data_config)  # train.yaml, the run and a resume see the data used
    data = load_data(data_config, input_size=arch.input_size, in_chans=arch.in_chans)
    arch = _matched_to_data(arch, data, data_config, config)
    state = _resume_state(out, config, arch) if resume else None
    if not resume:
        _check_fresh(out)
    out.mkdir(parents=True, exist_ok=True)
    arch.to_yaml(out / "arch.yaml")
    (out / "train.yaml").write_text(masked_yaml(config.to_dict()))
    seed_everything(config.seed)
    import timm

    trainer = FullTrainer(timm.create_model("blocknet", arch=arch), data, config)
    if state is not None:
        trainer.restore(state)
    run_id = state.get("mlflow_run_id") if state else None
    if state is not None and int(state["epoch"]) + 1 >= config.train.epochs and TrainRun.finished(config, run_id):
        log.info("%s already trained all %d epochs and its run is finished: nothing to do", out, config.train.epochs)
        return _fit(trainer, config, arch, out, state, TrainRun(None, run_id), progress=False)
    run = TrainRun.open(config, arch, out, run_id=run_id, history=state["history"] if state else ())
    try:
        with training_threads(config.train):
            result = _fit(trainer, config, arch, out, state, run, progress)
        run.finish(result, arch, data)
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return result


def searched_data(arch: ArchConfig, config: FullTrainConfig) -> DataConfig:
    """The data ``arch`` was found (or last trained) on, from its ``meta["data"]``, without subsample caps.

    A search trains on a subsample for speed (``max_train_samples``, ``max_val_samples``);
    a full training takes the whole dataset, split the same way.

    Raises:
        ConfigError: ``arch`` records no data (not from a search or a training) and the config names none.
    """
    recorded = arch.meta.get("data")
    if not recorded:
        raise ConfigError(
            f"architecture {config.arch!r} records no dataset (it is not from a search or a training); "
            "set data: in the training config or pass --dataset",
            path="data",
            source=config.source,
        )
    searched = parse(DataConfig, recorded, source=f"{config.arch} (meta)", path="meta.data")
    full = dataclasses.replace(searched, max_train_samples=None, max_val_samples=None)
    if full != searched:
        log.info("training on %s without the search's subsample caps (all training and validation images)", full.name)
    return full


def _matched_to_data(arch: ArchConfig, data: DataSplit, data_config: DataConfig, config: FullTrainConfig) -> ArchConfig:
    """The architecture with the dataset's class count; in ``meta`` where it came from, the data and its preprocessing."""
    meta: dict[str, Any] = {
        "source": config.arch if isinstance(config.arch, str) else "inline",
        "data": to_plain(data_config),
        PREPROCESSING_KEY: Preprocessing.of(data).to_dict(),
    }
    if arch.meta:
        meta["search"] = dict(arch.meta)
    if arch.num_classes != data.num_classes:
        log.info(
            "dataset %s has %d classes: the classifier is rebuilt for it (arch had %d)",
            data.name,
            data.num_classes,
            arch.num_classes,
        )
    return arch.replace(num_classes=data.num_classes, meta=meta)


def _check_fresh(out: Path) -> None:
    if (out / f"{LAST}.pt").exists():
        raise CheckpointError(
            f"{out} already holds a training checkpoint; pass --resume (resume=True) to continue it, "
            "or choose another --out"
        )


_RESUME_KEYS = ("data", "train", "augment", "ema", "seed", "weights_format")


def _resume_state(out: Path, config: FullTrainConfig, arch: ArchConfig) -> dict[str, Any]:
    """The last checkpoint in ``out``, after checking it was made by the same config and architecture."""
    path = out / f"{LAST}.pt"
    if not path.exists():
        raise CheckpointError(
            f"cannot resume: {path} does not exist (nothing was checkpointed there yet); run without --resume"
        )
    state = load_training_state(path)
    saved, now = state["config"], config.to_dict()
    differing = [k for k in _RESUME_KEYS if saved.get(k) != now[k]]
    if ArchConfig.from_dict(state["arch"]) != arch:
        differing.insert(0, "arch")
    if differing:
        details = "; ".join(
            f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now" for k in differing if k != "arch"
        )
        raise ConfigError(
            f"cannot resume from {path}: {', '.join(differing)} differ from the checkpoint's"
            + (f" ({details})" if details else "")
            + "; resume with the same config, or train into another --out"
        )
    log.info("resuming %s after epoch %d of %d", out, state["epoch"] + 1, config.train.epochs)
    return state


def _fit(
    trainer: FullTrainer,
    config: FullTrainConfig,
    arch: ArchConfig,
    out: Path,
    state: Mapping[str, Any] | None,
    run: TrainRun,
    progress: bool,
) -> FullTrainResult:
    history: list[dict[str, float]] = list(state["history"]) if state else []
    best_acc, best_epoch = (float(state["best_accuracy"]), int(state["best_epoch"])) if state else (-1.0, -1)
    start = int(state["epoch"]) + 1 if state else 0
    epochs = config.train.epochs
    suffix = ".safetensors" if config.weights_format == "safetensors" else ".pth"
    preprocessing = Preprocessing.from_meta(arch.meta)
    metadata = preprocessing.metadata() if preprocessing else {}
    bar = tqdm(total=epochs, initial=start, desc=out.name, unit="epoch", disable=not progress)
    with logging_redirect_tqdm():
        for epoch in range(start, epochs):
            record = trainer.epoch(epoch)
            history.append({"epoch": epoch, **record})
            is_best = record["accuracy"] > best_acc
            if is_best:
                best_acc, best_epoch = record["accuracy"], epoch
            checkpoint = {
                **trainer.state(),
                "epoch": epoch,
                "best_accuracy": best_acc,
                "best_epoch": best_epoch,
                "history": history,
                "arch": arch.to_dict(),
                "config": config.to_dict(),
                "mlflow_run_id": run.run_id,
            }
            _save(out, LAST, checkpoint, trainer.inference_model, suffix, metadata)
            if is_best:
                _save(out, BEST, checkpoint, trainer.inference_model, suffix, metadata)
            run.log_epoch(record, epoch)  # after the checkpoint: a resume logs what a kill left unlogged
            bar.update()
            bar.set_postfix(acc=f"{record['accuracy']:.4f}", best=f"{best_acc:.4f}")
            log.info(
                "epoch %d/%d: val accuracy %.4f (best %.4f at epoch %d)",
                epoch + 1,
                epochs,
                record["accuracy"],
                best_acc,
                best_epoch + 1,
            )
    bar.close()
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return FullTrainResult(
        out_dir=out,
        best_accuracy=best_acc,
        best_epoch=best_epoch,
        final_accuracy=history[-1]["accuracy"],
        history=tuple(history),
        weights=out / f"{BEST}{suffix}",
        arch_path=out / "arch.yaml",
        run_id=run.run_id,
        resumed_from_epoch=start - 1 if state else None,
    )


def _save(
    out: Path, kind: str, checkpoint: Mapping[str, Any], model: nn.Module, suffix: str, metadata: Mapping[str, str]
) -> None:
    """Weights first, then the training state: a state on disk always has its weights beside it."""
    save_weights(out / f"{kind}{suffix}", model.state_dict(), metadata=metadata)
    save_training_state(out / f"{kind}.pt", checkpoint)
