"""Raw image sources: decode each dataset once into float tensors in ``[0, 1]``.

Every reader returns a :class:`RawData` at the source's own resolution and channel
count (except image folders, which PIL decodes straight to the requested size);
:mod:`blocknas.search.data.splits` resizes, splits and normalizes them the same way for all.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

__all__ = ["BadFilePolicy", "DataError", "RawData", "make_synthetic", "read_cifar", "read_digits", "read_image_folder"]

logger = logging.getLogger(__name__)

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
"""The folder torchvision extracts each CIFAR into, under the dataset's ``root``."""


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


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """A default socket timeout, so a download without network fails quickly instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def read_cifar(name: str, root: str, *, download: bool, timeout_s: float = 10.0) -> RawData:
    """CIFAR-10/100 in torchvision's on-disk format under ``root``; the test set is the validation split.

    Raises:
        DataError: the files are absent (and ``download`` is false), cannot be downloaded (no network
            within ``timeout_s``) or fail torchvision's checksums.
    """
    from torchvision.datasets import CIFAR10, CIFAR100

    folder = Path(root).expanduser() / CIFAR_FOLDERS[name]
    if not download and not folder.is_dir():
        raise DataError(
            f"{name}: no dataset found at {folder} (searched root {root!r} for {CIFAR_FOLDERS[name]}/); "
            f"put torchvision's extracted files there, or set `download: true` in the data config to fetch it"
        )
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        with socket_timeout(timeout_s):
            train, test = (cls(str(Path(root).expanduser()), train=t, download=download) for t in (True, False))
    except OSError as exc:  # urllib's URLError, a timeout, a full disk: the download did not happen
        reason = " ".join(str(exc).split())
        raise DataError(
            f"{name}: download into {folder.parent} failed ({reason}); check the network, or put torchvision's "
            f"extracted files at {folder} and set `download: false`"
        ) from None
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


BadFilePolicy = Literal["stop", "skip"]
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def read_image_folder(
    root: str,
    *,
    input_size: tuple[int, int] | None = None,
    in_chans: int | None = None,
    on_bad_file: BadFilePolicy = "stop",
    workers: int | None = None,
) -> RawData:
    """A torchvision ``ImageFolder`` layout, with or without ``train/`` and ``val/`` subfolders.

    ``root/train/<class>/*.png`` + ``root/val/<class>/*.png`` gives a fixed split; otherwise
    ``root/<class>/*.png`` (or a lone ``root/train/``) is returned unsplit. Each image is
    decoded once with PIL, converted to ``L`` or ``RGB`` and resized (bilinear) to ``input_size``;
    16-bit, 32-bit integer and float images are scaled to 8 bits first (see :func:`_to_8bit`).

    Args:
        root: The folder.
        input_size: ``(height, width)``; None: the images' own (the most common size among them).
        in_chans: 1 (grayscale) or 3 (RGB); None: 3 if any image has colour, else 1.
        on_bad_file: ``stop``: an image that cannot be decoded is an error, which lists every such
            image at once; ``skip``: they are left out, and listed in a warning.
        workers: Decoding threads (default: up to 8).

    Raises:
        DataError: the folder is missing or has no class subfolders, or (``stop``) an image cannot be read.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"imagefolder: {base} does not exist or is not a directory")
    if in_chans not in (None, 1, 3):
        raise DataError(f"imagefolder: in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")
    train_dir, val_dir = base / "train", base / "val"
    if not train_dir.is_dir():
        if val_dir.is_dir():
            raise DataError(f"imagefolder: {base} has val/ but no train/; add {train_dir} or drop the val/ folder")
        train_dir = base
    classes = _find_classes(train_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits = [_list_images(train_dir, class_to_idx, require_all=True)]
    if val_dir.is_dir():
        unknown = sorted(set(_find_classes(val_dir)) - set(classes))
        if unknown:
            raise DataError(f"imagefolder: {val_dir} has classes not in {train_dir}: {', '.join(unknown)}")
        splits.append(_list_images(val_dir, class_to_idx, require_all=False))
    pool = ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1))  # PIL releases the GIL
    with pool, warnings.catch_warnings():
        # PIL only warns between MAX_IMAGE_PIXELS and twice that; an image that large is refused either way
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        bad: dict[Path, str] = {}
        if input_size is None or in_chans is None:
            size, colour = _own_shape(pool, [p for samples in splits for p, _ in samples], bad)
            input_size, in_chans = input_size or size, in_chans or (3 if colour else 1)
        decode = _Decoder(input_size, "L" if in_chans == 1 else "RGB")
        decoded = [_decode_all(pool, decode, [s for s in samples if s[0] not in bad], bad) for samples in splits]
    _report_bad(bad, on_bad_file)
    (x_train, y_train), *val = decoded
    x_val, y_val = val[0] if val else (None, None)
    return RawData(x_train, y_train, x_val, y_val, len(classes), classes)


def _own_shape(pool: ThreadPoolExecutor, paths: list[Path], bad: dict[Path, str]) -> tuple[tuple[int, int], bool]:
    """The most common ``(height, width)`` among the images, and whether any has colour (headers only)."""
    sizes: Counter[tuple[int, int]] = Counter()
    colour = False
    for path, found in zip(paths, pool.map(_header, paths)):
        if isinstance(found, str):
            bad[path] = found
            continue
        sizes[found[0]] += 1
        colour = colour or found[1]
    if not sizes:
        raise DataError(
            f"imagefolder: none of the {len(paths)} images can be read; the first: {next(iter(bad.values()))}"
        )
    (size, _), *others = sizes.most_common()
    if others:
        logger.info(
            "imagefolder: the images come in %d sizes; all are resized to the most common, %dx%d "
            "(set data.input_size to choose)", len(sizes), *size,
        )  # fmt: skip
    return size, colour


def _header(path: Path) -> tuple[tuple[int, int], bool] | str:
    """``((height, width), has colour)`` from an image's header, or why it cannot be read."""
    try:
        with Image.open(path) as image:
            return (image.height, image.width), image.mode not in _GRAY_MODES
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"cannot decode {path}: {exc}"


def _decode_all(
    pool: ThreadPoolExecutor, decode: _Decoder, samples: Sequence[tuple[Path, int]], bad: dict[Path, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The decodable images of ``samples`` as one batch, with their labels; the others go to ``bad``."""
    good: list[tuple[np.ndarray, int]] = []
    for (path, label), found in zip(samples, pool.map(decode, (p for p, _ in samples))):
        if isinstance(found, str):
            bad[path] = found
        else:
            good.append((found, label))
    if not good:
        return torch.empty(0, len(decode.mode), *decode.size[::-1]), torch.empty(0, dtype=torch.long)
    images = np.stack([image for image, _ in good])
    if images.ndim == 3:
        images = images[..., None]
    return _hwc_uint8_to_tensor(images), torch.tensor([label for _, label in good], dtype=torch.long)


def _report_bad(bad: Mapping[Path, str], on_bad_file: BadFilePolicy) -> None:
    """Every image that cannot be decoded, at once: an error (``stop``) or a warning (``skip``)."""
    if not bad:
        return
    listing = "\n".join(f"  {reason}" for _, reason in sorted(bad.items()))
    if on_bad_file == "stop":
        raise DataError(
            f"imagefolder: {len(bad)} image(s) cannot be decoded; fix or remove them, or set `on_bad_file: skip` "
            f"in the data config to leave them out:\n{listing}"
        )
    logger.warning(
        "imagefolder: skipped %d image(s) that cannot be decoded (on_bad_file: skip):\n%s", len(bad), listing
    )


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
    """Decodes one image file into a uint8 array of one size and mode, or says why it cannot."""

    def __init__(self, input_size: tuple[int, int], mode: str) -> None:
        self.size, self.mode = (input_size[1], input_size[0]), mode  # PIL takes (width, height)

    def __call__(self, path: Path) -> np.ndarray | str:
        try:
            with Image.open(path) as image:
                resized = _to_8bit(image, path).convert(self.mode).resize(self.size, Image.Resampling.BILINEAR)
        except DataError as exc:  # _to_8bit's: NaN pixels, negative 32-bit values
            return str(exc).removeprefix("imagefolder: ")
        except (OSError, UnidentifiedImageError) as exc:
            return f"cannot decode {path}: {exc}"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return f"{path} is too large to decode safely ({exc}); shrink it, or remove it from the folder"
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
