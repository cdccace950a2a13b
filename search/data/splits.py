"""Datasets for brief training: ``DataConfig`` → in-memory, resized, normalized ``DataSplit``.

Search trials train for seconds, so every dataset is decoded once into tensors and
mini-batches are slices of them: no per-sample decoding, no DataLoader workers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from blocknas.blocks import ConfigError
from blocknas.blocks.arch import MAX_IN_CHANS, MAX_INPUT_SIDE
from blocknas.blocks.schema import check_range
from blocknas.search.seeding import check_seed

from .idx import IDX_DATASETS, read_idx_dataset
from .sources import BadFilePolicy, DataError, RawData, make_synthetic, read_cifar, read_digits, read_image_folder

__all__ = [
    "MAX_SAMPLES",
    "MAX_SYNTHETIC_SAMPLES",
    "DataConfig",
    "DataError",
    "DataSplit",
    "clear_data_cache",
    "load_data",
    "load_data_for",
]

logger = logging.getLogger(__name__)

DatasetName = Literal["digits", "synthetic", "imagefolder", "cifar10", "cifar100", "fashion_mnist", "mnist", "kmnist"]
_NEEDS_ROOT = ("imagefolder", "cifar10", "cifar100")
_DOWNLOADABLE = ("cifar10", "cifar100", *IDX_DATASETS)
_RESIZE_CHUNK = 4096  # images per interpolate call, bounds the temporary memory

MAX_SYNTHETIC_SAMPLES = 100_000
"""Most samples of the generated ``synthetic`` dataset (1.2 GB of 3×32×32 images)."""
SYNTHETIC_SHAPE = (3, 32, 32)
"""``synthetic``'s images, channels × height × width, where neither the config nor the space sets them."""
MAX_SAMPLES = 1_000_000_000
"""Largest ``max_train_samples`` / ``max_val_samples``: more than any dataset held in memory."""


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on and how to split it.

    ``digits`` (the default) is scikit-learn's bundled 8×8 digits, real and offline;
    ``synthetic`` is a generated toy problem for tests; ``imagefolder`` reads a user's
    folder; ``cifar10``/``cifar100`` read torchvision's files under ``root``;
    ``fashion_mnist``/``mnist``/``kmnist`` read idx files from ``root`` or, without it, from
    the standard places (:func:`blocknas.search.data.standard_places`). Nothing is
    downloaded unless ``download: true`` is set explicitly. ``max_train_samples`` and
    ``max_val_samples`` take stratified, seeded subsamples of the two splits (before any
    resizing, so a large dataset costs memory only for what is kept).

    ``input_size`` and ``in_chans`` set the shape every image is brought to; unset (and not
    pinned by the search space), the dataset's own is used (an image folder's: its most common
    size, and RGB if any image has colour; ``synthetic``: 3×32×32). ``on_bad_file`` decides what
    an image folder's undecodable images do: ``stop`` (an error listing them all) or ``skip``.

    Attributes:
        name: The dataset: ``digits``, ``synthetic``, ``imagefolder``, ``cifar10``, ``cifar100``,
            ``fashion_mnist``, ``mnist`` or ``kmnist``.
        root: The folder holding the files (required for ``imagefolder`` and CIFAR); for the idx
            datasets optional, without it the standard places are searched.
        val_fraction: Share of the images held out for validation where the dataset has no
            validation split of its own (``digits``, ``synthetic``, an image folder without ``val/``).
        download: Fetch the files with torchvision into the user cache when they are missing
            (idx datasets and CIFAR only); never implicit.
        num_samples: ``synthetic`` only: how many images to generate.
        num_classes: ``synthetic`` only: how many classes to generate.
        seed: Seed of the split, the subsamples and the synthetic images.
        max_train_samples: A stratified, seeded subsample of the training split (null: all).
        max_val_samples: A stratified, seeded subsample of the validation split (null: all).
        input_size: ``[height, width]`` every image is resized to (null: the space's or the dataset's own).
        in_chans: Channels every image is brought to: grayscale is replicated, RGB becomes luminance
            at 1 (null: the space's or the dataset's own).
        on_bad_file: ``imagefolder`` only: ``stop`` (an error listing every undecodable image) or
            ``skip`` (leave them out, listed in a warning).
    """

    name: DatasetName = "digits"
    root: str | None = None
    val_fraction: float = 0.2
    download: bool = False
    num_samples: int = 512
    num_classes: int = 10
    seed: int = 0
    max_train_samples: int | None = None
    max_val_samples: int | None = None
    input_size: tuple[int, int] | None = None
    in_chans: int | None = None
    on_bad_file: BadFilePolicy = "stop"

    def __post_init__(self) -> None:
        if self.name in _NEEDS_ROOT and not self.root:
            raise ConfigError(
                f"dataset {self.name!r} needs a root folder (the directory holding its files)", path="root"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{self.val_fraction} must be strictly between 0 and 1", path="val_fraction")
        if self.download and self.name not in _DOWNLOADABLE:
            raise ConfigError(
                f"download applies only to {', '.join(_DOWNLOADABLE)}, not {self.name!r}", path="download"
            )
        if self.num_classes < 2:
            raise ConfigError(f"{self.num_classes} must be >= 2", path="num_classes")
        check_range(self.num_samples, "num_samples", 2, MAX_SYNTHETIC_SAMPLES)
        if self.num_samples < 2 * self.num_classes:
            raise ConfigError(
                f"{self.num_samples} is too few for {self.num_classes} classes; need >= {2 * self.num_classes}",
                path="num_samples",
            )
        for key in ("max_train_samples", "max_val_samples"):
            value = getattr(self, key)
            if value is not None:
                check_range(value, key, 1, MAX_SAMPLES, hint=" (or null for all)")
        check_seed(self.seed)
        for i, side in enumerate(self.input_size or ()):
            check_range(side, f"input_size[{i}]", 1, MAX_INPUT_SIDE, hint=" (or null for the images' own)")
        if self.in_chans is not None:
            check_range(self.in_chans, "in_chans", 1, MAX_IN_CHANS, hint=" (or null for the images' own)")
        if self.on_bad_file == "skip" and self.name != "imagefolder":
            raise ConfigError(f"skipping bad files applies to imagefolder only, not {self.name!r}", path="on_bad_file")


@dataclass(frozen=True, eq=False)
class DataSplit:
    """Train and validation tensors in memory, already resized to the input size and normalized.

    ``x_*`` are N×C×H×W float32, ``y_*`` int64 class indices. ``mean``/``std`` are the
    per-channel statistics of the training images in ``[0, 1]`` scale, used for both
    splits. The tensors may be shared through the cache: treat them as read-only.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    classes: tuple[str, ...] = ()

    @property
    def input_size(self) -> tuple[int, int]:
        return (int(self.x_train.shape[-2]), int(self.x_train.shape[-1]))

    def __repr__(self) -> str:
        return (
            f"DataSplit(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"num_classes={self.num_classes}, in_chans={self.in_chans}, input_size={self.input_size})"
        )


def load_data(
    cfg: DataConfig, *, input_size: tuple[int, int] | list[int] | None = None, in_chans: int | None = 3
) -> DataSplit:
    """Load, resize, split and normalize a dataset; cached in-process per (config, size, channels).

    Args:
        cfg: which dataset and split.
        input_size: (height, width) every image is resized to (bilinear); None: ``cfg.input_size``,
            else the dataset's own.
        in_chans: channels of the network input; grayscale sources are replicated,
            RGB sources are converted to luminance when ``in_chans`` is 1. None: ``cfg.in_chans``,
            else the dataset's own.

    Raises:
        ConfigError: the config is invalid (checked here too, for configs built in code).
        DataError: the dataset's files are missing, empty or unreadable.
    """
    size = input_size or cfg.input_size
    size = (int(size[0]), int(size[1])) if size else None
    channels = in_chans or cfg.in_chans
    if (size and min(size) < 1) or (channels is not None and channels < 1):
        raise DataError(f"input_size {size} and in_chans {channels} must be positive")
    return _load_cached(cfg, size, channels)


def clear_data_cache() -> None:
    """Forget cached datasets (e.g. after files under an image folder changed)."""
    _load_cached.cache_clear()


@lru_cache(maxsize=4)
def _load_cached(cfg: DataConfig, wanted_size: tuple[int, int] | None, wanted_chans: int | None) -> DataSplit:
    start = time.perf_counter()
    raw = _read(cfg, wanted_size, wanted_chans)
    size = wanted_size or (int(raw.x_train.shape[-2]), int(raw.x_train.shape[-1]))
    in_chans = wanted_chans or int(raw.x_train.shape[1])
    g = torch.Generator().manual_seed(cfg.seed)
    train_idx, val_idx = _split(raw, cfg.val_fraction, g)
    train_idx = _subsample(train_idx, raw.y_train, cfg.max_train_samples, g)
    x_val_src, y_val_src = (raw.x_val, raw.y_val) if raw.y_val is not None else (raw.x_train, raw.y_train)
    assert x_val_src is not None  # RawData's x_val and y_val are both set or both None
    val_idx = _subsample(val_idx, y_val_src, cfg.max_val_samples, g)
    x_train, y_train = _to_shape(raw.x_train[train_idx], size, in_chans), raw.y_train[train_idx]
    x_val, y_val = _to_shape(x_val_src[val_idx], size, in_chans), y_val_src[val_idx]
    _check_classes(cfg, raw, y_train, y_val)
    mean, std = _normalize(x_train, x_val)
    split = DataSplit(x_train, y_train, x_val, y_val, raw.num_classes, in_chans, mean, std, cfg.name, raw.classes)
    logger.info("loaded %r in %.2f s", split, time.perf_counter() - start)
    return split


def _check_classes(cfg: DataConfig, raw: RawData, y_train: torch.Tensor, y_val: torch.Tensor) -> None:
    """At least two classes, each in both splits: accuracy over a missing class means nothing."""
    if raw.num_classes < 2:
        raise DataError(
            f"dataset {cfg.name!r} has {raw.num_classes} class ({', '.join(raw.classes)}); "
            "classification needs at least 2"
        )
    for split, y in (("training", y_train), ("validation", y_val)):
        counts = torch.bincount(y, minlength=raw.num_classes)
        missing = [raw.classes[c] for c in range(raw.num_classes) if counts[c] == 0]
        if missing:
            raise DataError(
                f"dataset {cfg.name!r}: the {split} split has no images of class {missing[0]!r}"
                + (f" (nor of {', '.join(map(repr, missing[1:]))})" if missing[1:] else "")
                + "; add images of every class to each split, or raise val_fraction / max_*_samples"
            )


def _split(raw: RawData, val_fraction: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the (train, val) images, chosen before any resizing.

    A pre-split source keeps its own validation set (val indices are into ``raw.x_val``);
    otherwise a stratified ``val_fraction`` of ``raw.x_train`` is held out.
    """
    if raw.y_val is not None:
        return torch.arange(len(raw.y_train)), torch.arange(len(raw.y_val))
    val_idx = stratified_sample(raw.y_train, round(len(raw.y_train) * val_fraction), generator=g)
    return _complement(val_idx, len(raw.y_train)), val_idx


def _subsample(idx: torch.Tensor, y: torch.Tensor, n: int | None, g: torch.Generator) -> torch.Tensor:
    """A stratified, seeded subset of ``n`` of the indices ``idx`` (into ``y``), in their order; all when None."""
    if n is None or n >= len(idx):
        return idx
    return idx[torch.sort(stratified_sample(y[idx], n, generator=g)).values]


def _read(cfg: DataConfig, size: tuple[int, int] | None, in_chans: int | None) -> RawData:
    """The dataset's images at their own shape (an image folder and ``synthetic``: at ``size``/``in_chans`` if given)."""
    if cfg.name == "digits":
        return read_digits()
    if cfg.name == "synthetic":
        size, in_chans = size or SYNTHETIC_SHAPE[1:], in_chans or SYNTHETIC_SHAPE[0]
        return make_synthetic(
            num_samples=cfg.num_samples, num_classes=cfg.num_classes, input_size=size, in_chans=in_chans, seed=cfg.seed
        )
    if cfg.name in IDX_DATASETS:
        return read_idx_dataset(cfg.name, cfg.root, download=cfg.download)
    assert cfg.root is not None  # checked by DataConfig.__post_init__
    if cfg.name == "imagefolder":
        return read_image_folder(cfg.root, input_size=size, in_chans=in_chans, on_bad_file=cfg.on_bad_file)
    return read_cifar(cfg.name, cfg.root, download=cfg.download)


def stratified_sample(y: torch.Tensor, n: int, *, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``n`` samples drawn per class in proportion to class sizes (largest remainder).

    Each class contributes ``n * n_c / N`` rounded so the total is exactly ``n``; within a
    class the samples are a random choice under ``generator``.
    """
    counts = torch.bincount(y)
    quota = counts.double() * n / len(y)
    take = quota.floor().long()
    remainder = n - int(take.sum())
    if remainder > 0:
        order = torch.argsort(quota - take.double(), descending=True, stable=True)
        take[order[:remainder]] += 1
    chosen = []
    for c in range(len(counts)):
        members = torch.nonzero(y == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: int(take[c])]])
    return torch.cat(chosen)


def _complement(idx: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[idx] = False
    return torch.nonzero(mask).flatten()


def _to_shape(x: torch.Tensor, size: tuple[int, int], in_chans: int) -> torch.Tensor:
    """Resize (bilinear, in chunks) and match the channel count."""
    if tuple(x.shape[-2:]) != size:
        x = torch.cat(
            [F.interpolate(chunk, size=size, mode="bilinear", align_corners=False) for chunk in x.split(_RESIZE_CHUNK)]
        )
    channels = x.shape[1]
    if channels == in_chans:
        return x
    if channels == 1:
        return x.expand(-1, in_chans, -1, -1).contiguous()
    if channels == 3 and in_chans == 1:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise DataError(f"cannot turn {channels}-channel images into {in_chans} channels (supported: 1→N, 3→1)")


def _normalize(x_train: torch.Tensor, x_val: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Standardize both splits in place with the training split's per-channel mean and std."""
    total = torch.zeros(x_train.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in x_train.split(_RESIZE_CHUNK):  # float64 sums, chunked to bound the memory
        chunk = chunk.double()
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
    count = x_train.numel() // x_train.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    view = (1, -1, 1, 1)
    for x in (x_train, x_val):
        x.sub_(mean.float().view(view)).div_(std.float().view(view))
    return tuple(mean.tolist()), tuple(std.tolist())


def load_data_for(
    cfg: DataConfig,
    *,
    input_size: tuple[int, int] | None,
    in_chans: int | None,
    num_classes: int | None,
    what: str,
    path: str,
    source: str | None,
) -> DataSplit:
    """:func:`load_data` at the shape the networks pin (None: the data's own, or ``cfg``'s), checked against it.

    A shape pinned by both the networks and ``cfg`` must agree, and pinned classes must be the
    dataset's; every mismatch is reported in one error naming both sides.

    Args:
        input_size, in_chans, num_classes: What the networks pin, or None to take the data's.
        what: The networks' origin for the message, e.g. "the space 'mobile32'" or "the base architecture".
        path, source: Config key path and file named by the error.
    """
    pins = {"input_size": list(input_size) if input_size else None, "in_chans": in_chans}
    settings = {"input_size": list(cfg.input_size) if cfg.input_size else None, "in_chans": cfg.in_chans}
    problems = [
        f"{what} pins {key} {pin}, but data.{key} is {settings[key]}; set it in one place, or make the two agree"
        for key, pin in pins.items()
        if pin is not None and settings[key] is not None and pin != settings[key]
    ]
    try:
        data = load_data(cfg, input_size=input_size, in_chans=in_chans)
    except DataError as exc:
        if not problems:
            raise
        raise ConfigError("; ".join([*problems, str(exc)]), path=path, source=source) from None
    if num_classes is not None and data.num_classes != num_classes:
        problems.append(
            f"{what} pins num_classes {num_classes}, but dataset {cfg.name!r} has {data.num_classes} classes "
            f"({_some(data.classes)}); remove num_classes from it to take the data's, or use {num_classes}-class data"
        )
    if problems:
        raise ConfigError("; ".join(problems), path=path, source=source)
    return data


def _some(names: tuple[str, ...], shown: int = 5) -> str:
    """The first few class names, and how many more."""
    more = f", … ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
