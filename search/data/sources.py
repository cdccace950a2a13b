"""Raw image sources: decode each dataset once into float tensors in ``[0, 1]``.

Every reader returns a :class:`RawData` at the source's own resolution and channel
count (except image folders, which PIL decodes straight to the requested size);
:mod:`blocknas.search.data.splits` resizes, splits and normalizes them the same way for all.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ["DataError", "RawData", "make_synthetic", "read_cifar", "read_digits", "read_image_folder"]

logger = logging.getLogger(__name__)

_CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


class DataError(ValueError):
    """A dataset cannot be loaded: missing or empty folder, absent files, bad images."""


@dataclass(frozen=True, eq=False)
class RawData:
    """Decoded images (N×C×H×W float in ``[0, 1]``) and int64 labels; ``x_val`` is None when not pre-split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    num_classes: int
    classes: tuple[str, ...]


def read_digits() -> RawData:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes, no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target).long()
    return RawData(x, y, None, None, 10, tuple(str(i) for i in range(10)))


def make_synthetic(
    *, num_samples: int, num_classes: int, input_size: tuple[int, int], in_chans: int, seed: int
) -> RawData:
    """A learnable toy problem: one smooth random template per class plus pixel noise.

    Templates are 4×4 random patterns upsampled to ``input_size``; each image is its class
    template with a random contrast and Gaussian noise, so a tiny net beats chance in an
    epoch while the task is not trivially linear in a single pixel. Deterministic in ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, in_chans, 4, 4, generator=g)
    templates = F.interpolate(templates, size=input_size, mode="bilinear", align_corners=False)
    y = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=g)]
    contrast = 0.75 + 0.5 * torch.rand(num_samples, 1, 1, 1, generator=g)
    noise = 0.25 * torch.randn(num_samples, in_chans, *input_size, generator=g)
    x = (0.5 + contrast * (templates[y] - 0.5) + noise).clamp_(0.0, 1.0)
    return RawData(x, y, None, None, num_classes, tuple(str(i) for i in range(num_classes)))


def read_cifar(name: str, root: str, *, download: bool) -> RawData:
    """CIFAR-10/100 in torchvision's on-disk format under ``root``; the test set is the validation split.

    Raises:
        DataError: the files are absent (and ``download`` is false) or fail torchvision's checksums.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    folder = Path(root).expanduser() / _CIFAR_FOLDERS[name]
    if not download and not folder.is_dir():
        raise DataError(
            f"{name}: no dataset found at {folder} (searched root {root!r} for {_CIFAR_FOLDERS[name]}/); "
            f"put torchvision's extracted files there, or set `download: true` in the data config to fetch it"
        )
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        train, test = (cls(str(Path(root).expanduser()), train=t, download=download) for t in (True, False))
    except RuntimeError as exc:
        raise DataError(
            f"{name}: files under {folder} are incomplete or corrupted ({exc}); "
            f"delete the folder and set `download: true` to fetch a fresh copy"
        ) from None
    x_train, x_val = (_hwc_uint8_to_tensor(d.data) for d in (train, test))
    y_train, y_val = (torch.tensor(d.targets, dtype=torch.long) for d in (train, test))
    return RawData(x_train, y_train, x_val, y_val, len(train.classes), tuple(train.classes))


def _hwc_uint8_to_tensor(images: np.ndarray) -> torch.Tensor:
    """N×H×W×C uint8 → N×C×H×W float32 in ``[0, 1]`` (no float64 detour)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def read_image_folder(root: str, *, input_size: tuple[int, int], in_chans: int, workers: int | None = None) -> RawData:
    """A torchvision ``ImageFolder`` layout, with or without ``train/`` and ``val/`` subfolders.

    ``root/train/<class>/*.png`` + ``root/val/<class>/*.png`` gives a fixed split; otherwise
    ``root/<class>/*.png`` (or a lone ``root/train/``) is returned unsplit. Each image is
    decoded once with PIL, converted to ``L`` or ``RGB`` and resized (bilinear) to ``input_size``;
    16-bit, 32-bit integer and float images are scaled to 8 bits first (see :func:`_to_8bit`).

    Raises:
        DataError: the folder is missing, has no class subfolders, or an image cannot be read.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"imagefolder: {base} does not exist or is not a directory")
    if in_chans not in (1, 3):
        raise DataError(f"imagefolder: in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
    train_dir, val_dir = base / "train", base / "val"
    if not train_dir.is_dir():
        if val_dir.is_dir():
            raise DataError(f"imagefolder: {base} has val/ but no train/; add {train_dir} or drop the val/ folder")
        train_dir = base
    classes = _find_classes(train_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    decode = _Decoder(input_size, "L" if in_chans == 1 else "RGB", workers)
    x_train, y_train = decode(_list_images(train_dir, class_to_idx, require_all=True))
    if not val_dir.is_dir():
        return RawData(x_train, y_train, None, None, len(classes), classes)
    unknown = sorted(set(_find_classes(val_dir)) - set(classes))
    if unknown:
        raise DataError(f"imagefolder: {val_dir} has classes not in {train_dir}: {', '.join(unknown)}")
    x_val, y_val = decode(_list_images(val_dir, class_to_idx, require_all=False))
    return RawData(x_train, y_train, x_val, y_val, len(classes), classes)


def _find_classes(folder: Path) -> tuple[str, ...]:
    classes = tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")))
    if not classes:
        raise DataError(f"imagefolder: {folder} has no class subfolders (expected {folder}/<class>/<image>.png)")
    return classes


def _list_images(folder: Path, class_to_idx: dict[str, int], *, require_all: bool) -> list[tuple[Path, int]]:
    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for name, idx in class_to_idx.items():
        files = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if not files:
            empty.append(name)
        samples.extend((p, idx) for p in files)
    if empty and require_all:
        raise DataError(
            f"imagefolder: no images in {folder} for class(es) {', '.join(empty)} "
            f"(extensions: {', '.join(IMG_EXTENSIONS)})"
        )
    if not samples:
        raise DataError(f"imagefolder: no images found under {folder} (extensions: {', '.join(IMG_EXTENSIONS)})")
    return samples


class _Decoder:
    """Decodes a list of (path, label) into one uint8 batch, in parallel threads (PIL releases the GIL)."""

    def __init__(self, input_size: tuple[int, int], mode: str, workers: int | None) -> None:
        self.size, self.mode = (input_size[1], input_size[0]), mode  # PIL takes (width, height)
        self.workers = workers or min(8, os.cpu_count() or 1)

    def __call__(self, samples: Sequence[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; an image that large is refused either way
        with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=self.workers) as pool:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            arrays = list(pool.map(self._one, (p for p, _ in samples)))
        images = np.stack(arrays)
        if images.ndim == 3:
            images = images[..., None]
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        return _hwc_uint8_to_tensor(images), labels

    def _one(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as image:
                resized = _to_8bit(image, path).convert(self.mode).resize(self.size, Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"imagefolder: cannot decode {path}: {exc}") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(
                f"imagefolder: {path} is too large to decode safely ({exc}); shrink it, or remove it from the folder"
            ) from None
        return np.asarray(resized, dtype=np.uint8)


_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 2**31 - 1}
"""The white level of PIL's high-bit-depth integer modes: the range of their pixel type."""


def _to_8bit(image: Image.Image, path: Path) -> Image.Image:
    """A high-bit-depth image as 8-bit grayscale, scaled by its range (PIL's own conversion clips at 255).

    16-bit (``I;16``) is divided by 65535 and 32-bit integer (``I``) by 2³¹ − 1, the range of
    their pixel types; 32-bit float (``F``) is taken as ``[0, 1]``, values outside clipped (with
    a warning) rather than stretched per image, so all images keep one intensity scale.
    """
    if image.mode not in _FULL_SCALE and image.mode != "F":
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise DataError(f"imagefolder: {path} is a float image with NaN or infinite pixels")
        if values.min() < 0.0 or values.max() > 1.0:
            logger.warning(
                "imagefolder: %s is a float image with values in [%g, %g], outside [0, 1]; clipped",
                path, values.min(), values.max(),
            )  # fmt: skip
    elif values.min() < 0:
        raise DataError(
            f"imagefolder: {path} is a 32-bit signed image with negative pixels ({values.min():.0f}); "
            "store images as 8- or 16-bit unsigned, or as float in [0, 1]"
        )
    else:
        values /= _FULL_SCALE[image.mode]
    return Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8))  # 2-D uint8: mode L
