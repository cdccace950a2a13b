"""MNIST-format (idx) datasets: Fashion-MNIST, MNIST and KMNIST, read offline from standard places.

The four files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally ``.gz``) are found
in a folder in one of two layouts: flat (the four files in the folder, as Debian's
``dataset-fashion-mnist`` installs them) or torchvision's (``<folder>/FashionMNIST/raw/``).
Without an explicit ``root`` the folders of :func:`standard_places` are searched in order.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .sources import DataError, RawData, socket_timeout

__all__ = [
    "DATA_ENV_VAR",
    "IDX_DATASETS",
    "IdxDataset",
    "download_idx",
    "find_idx_folder",
    "read_idx",
    "read_idx_dataset",
    "standard_places",
]

logger = logging.getLogger(__name__)

DATA_ENV_VAR = "BLOCKNAS_DATA"
"""Environment variable naming a folder of datasets; ``$BLOCKNAS_DATA/<name>`` is searched first."""

_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_UBYTE = 0x08  # idx type code for unsigned bytes, the only one these datasets use


@dataclass(frozen=True)
class IdxDataset:
    """One idx dataset: torchvision's class and folder name, class names, and where a distro installs it."""

    torchvision_name: str
    classes: tuple[str, ...]
    system_places: tuple[Path, ...] = ()


IDX_DATASETS: dict[str, IdxDataset] = {
    "fashion_mnist": IdxDataset(
        "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (Path("/usr/share/datasets/fashion-mnist"),),
    ),
    "mnist": IdxDataset("MNIST", tuple(str(i) for i in range(10))),
    "kmnist": IdxDataset("KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """One idx file (gzipped or plain) as a uint8 array of ``ndim`` dimensions.

    Raises:
        DataError: the file cannot be read, its magic number is not an ``ndim``-dimensional
            unsigned-byte idx header, or it holds fewer or more bytes than the header says.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"idx: cannot read {path}: {exc}; delete it and fetch a fresh copy") from None
    expected = (_UBYTE << 8) | ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic != expected:
        raise DataError(
            f"idx: {path} has magic number {magic:#010x}, expected {expected:#010x} "
            f"(a {ndim}-dimensional unsigned-byte idx file); is it the right file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx: {path} is truncated: {len(raw)} bytes, shorter than its {header}-byte header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise DataError(
            f"idx: {path} holds {len(raw) - header} data bytes but its header {shape} needs {size}: "
            f"the file is truncated or corrupted; delete it and fetch a fresh copy"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def standard_places(name: str) -> list[Path]:
    """Folders searched for dataset ``name`` when no ``root`` is given, in order.

    ``$BLOCKNAS_DATA/<name>`` (when set), the user cache ``$XDG_CACHE_HOME/blocknas/<name>``
    (``~/.cache/blocknas/<name>`` by default, where ``download: true`` stores it), then
    the system folders a distro package installs (Debian's ``/usr/share/datasets/fashion-mnist``).
    """
    places = []
    if os.environ.get(DATA_ENV_VAR):
        places.append(Path(os.environ[DATA_ENV_VAR]).expanduser() / name)
    places.append(cache_dir(name))
    places.extend(IDX_DATASETS[name].system_places)
    return places


def cache_dir(name: str) -> Path:
    """``$XDG_CACHE_HOME/blocknas/<name>``, with ``~/.cache`` when ``XDG_CACHE_HOME`` is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "blocknas" / name


def find_idx_folder(name: str, root: str | None = None) -> Path | None:
    """The folder holding ``name``'s four idx files, or None when no searched place has them all.

    Each place (``root``, else :func:`standard_places`) is checked flat, then in torchvision's
    ``<place>/<TorchvisionName>/raw/`` layout.
    """
    for place in _places(name, root):
        for folder in _layouts(name, place):
            if all(_idx_file(folder, stem) is not None for stem in _FILES):
                return folder
    return None


def read_idx_dataset(name: str, root: str | None = None, *, download: bool = False) -> RawData:
    """Fashion-MNIST, MNIST or KMNIST as 28×28 grayscale; the official test set is the validation split.

    Args:
        name: A key of :data:`IDX_DATASETS`.
        root: Folder to read from; None searches :func:`standard_places`.
        download: Fetch the files with torchvision into ``root`` (or the user cache) when absent.

    Raises:
        DataError: no searched place has the files (the message names every place and how to
            get them), or a file is corrupted.
    """
    folder = find_idx_folder(name, root)
    if folder is None and download:
        download_idx(name, root)
        folder = find_idx_folder(name, root)
    if folder is None:
        raise DataError(_missing_message(name, root))
    logger.info("%s: reading idx files from %s", name, folder)
    paths = {stem: _idx_file(folder, stem) for stem in _FILES}
    arrays = [read_idx(path, ndim=3 if "images" in stem else 1) for stem, path in paths.items() if path is not None]
    x_train, y_train, x_val, y_val = arrays
    for images, labels, split in ((x_train, y_train, "train"), (x_val, y_val, "t10k")):
        if len(images) != len(labels):
            raise DataError(
                f"{name}: {folder} has {len(images)} {split} images but {len(labels)} {split} labels; "
                f"the files do not belong together"
            )
    classes = IDX_DATASETS[name].classes
    top = int(max(y_train.max(initial=0), y_val.max(initial=0)))
    if top >= len(classes):
        raise DataError(f"{name}: {folder} has label {top}, but {name} has only {len(classes)} classes")
    return RawData(_images(x_train), _labels(y_train), _images(x_val), _labels(y_val), len(classes), classes)


def download_idx(name: str, root: str | None = None, *, timeout_s: float = 10.0) -> Path:
    """Fetch ``name`` with torchvision's downloader into ``root`` (default: the user cache).

    Returns:
        The folder the files landed in (torchvision's ``<root>/<TorchvisionName>/raw``).

    Raises:
        DataError: the download failed (no network within ``timeout_s``, or a bad checksum).
    """
    import torchvision.datasets

    target = Path(root).expanduser() if root else cache_dir(name)
    cls = getattr(torchvision.datasets, IDX_DATASETS[name].torchvision_name)
    logger.info("%s: downloading with torchvision into %s", name, target)
    try:
        with socket_timeout(timeout_s):
            cls(root=str(target), download=True)
    except (OSError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())  # torchvision's message spans lines, one per mirror tried
        raise DataError(
            f"{name}: download into {target} failed ({reason}); "
            f"check the network, or get the files another way and set `root:` to their folder"
        ) from None
    return target / IDX_DATASETS[name].torchvision_name / "raw"


def _places(name: str, root: str | None) -> list[Path]:
    return [Path(root).expanduser()] if root else standard_places(name)


def _layouts(name: str, place: Path) -> tuple[Path, Path]:
    return place, place / IDX_DATASETS[name].torchvision_name / "raw"


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _missing_message(name: str, root: str | None) -> str:
    searched = "; ".join(f"{flat} and {tv}" for flat, tv in (_layouts(name, p) for p in _places(name, root)))
    how = []
    if name == "fashion_mnist":
        how.append("install Debian's package (`apt-get install dataset-fashion-mnist`)")
    how.append(f"set `download: true` in the data config (torchvision fetches it into {root or cache_dir(name)})")
    if not root:
        how.append(f"put the four files in ${DATA_ENV_VAR}/{name}/")
    return (
        f"{name}: dataset not found; searched {searched} for {', '.join(_FILES)} (each optionally .gz). "
        f"To get it: {'; or '.join(how)}"
    )


def _images(array: np.ndarray) -> torch.Tensor:
    """N×H×W uint8 → N×1×H×W float32 in ``[0, 1]``."""
    return torch.from_numpy(array.copy()).unsqueeze(1).float().div_(255.0)


def _labels(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array.astype(np.int64))
