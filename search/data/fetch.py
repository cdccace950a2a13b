"""Set-up: make sure a config's dataset is on disk before a study starts (``make search``).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package when apt-get can be run
as root; anything else is fetched by torchvision with a short connect timeout, so a machine
without network fails in seconds with a clear error instead of hanging.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from blocknas.blocks import ConfigError, load_yaml, parse

from .idx import IDX_DATASETS, download_idx, find_idx_folder
from .sources import CIFAR_FOLDERS, DataError, read_cifar
from .splits import DataConfig

__all__ = ["fetch_dataset", "read_data_section"]

logger = logging.getLogger(__name__)

_DEBIAN_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def read_data_section(path: str | Path) -> DataConfig:
    """The ``data:`` section of a study or ablation YAML, parsed without loading the rest of it."""
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError("a config file must be a mapping of keys", source=str(path))
    return parse(DataConfig, data.get("data") or {}, source=str(path), path="data")


def fetch_dataset(cfg: DataConfig, *, timeout_s: float = 10.0) -> str:
    """Get ``cfg``'s dataset files if they are in none of the places searched; say what was done.

    The idx datasets (Fashion-MNIST, MNIST, KMNIST) are fetched, CIFAR too when the config says
    ``download: true``; digits and synthetic need no files; an image folder is the user's, so
    only its presence is checked. Missing data is an error, never "nothing to fetch".

    Returns:
        One line for the user: where the files were found, or how they were fetched.

    Raises:
        DataError: the files could not be fetched.
    """
    if cfg.name not in IDX_DATASETS:
        return _check_local(cfg)
    found = find_idx_folder(cfg.name, cfg.root)
    if found is not None:
        return f"{cfg.name}: found at {found}"
    package = _DEBIAN_PACKAGES.get(cfg.name)
    apt_failure = ""
    if package and cfg.root is None and _can_apt():
        try:
            _apt_install(package)
        except DataError as exc:
            apt_failure = f"{exc}; "
            logger.warning("%s; trying torchvision's download instead", exc)
        found = find_idx_folder(cfg.name)
        if found is not None:
            return f"{cfg.name}: installed Debian's package {package} with apt-get, files at {found}"
    try:
        folder = download_idx(cfg.name, cfg.root, timeout_s=timeout_s)
    except DataError as exc:
        raise DataError(f"{apt_failure}{exc}") from None
    return f"{cfg.name}: downloaded with torchvision into {folder}"


def _check_local(cfg: DataConfig) -> str:
    """The line for a dataset that is not an idx one: built in, found, fetched (CIFAR) or a ``DataError``."""
    if cfg.name in ("digits", "synthetic"):
        return f"{cfg.name}: built in, no files needed"
    assert cfg.root is not None  # DataConfig requires it for image folders and CIFAR
    if cfg.name == "imagefolder":
        folder = Path(cfg.root).expanduser()
        if not folder.is_dir():
            raise DataError(
                f"imagefolder: {folder} does not exist; put your images there as <class>/<image> (or "
                "train/<class>/<image> and val/<class>/<image>), or point data.root at them"
            )
        return f"imagefolder: found at {folder} (your images; nothing is downloaded)"
    folder = Path(cfg.root).expanduser() / CIFAR_FOLDERS[cfg.name]
    if folder.is_dir():
        return f"{cfg.name}: found at {folder}"
    read_cifar(cfg.name, cfg.root, download=cfg.download)  # no download: an error saying what to do
    return f"{cfg.name}: downloaded with torchvision into {folder}"


def _can_apt() -> bool:
    """apt-get present, and we are root (no sudo prompt in the middle of ``make search``)."""
    return shutil.which("apt-get") is not None and Path("/etc/debian_version").is_file() and os.geteuid() == 0


def _apt_install(package: str) -> None:
    """``apt-get install -y <package>``; ``apt-get update`` first when the package lists lack it."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    known = subprocess.run(["apt-cache", "show", package], capture_output=True, env=env).returncode == 0
    if not known:
        logger.info("apt-get update (package lists do not know %s yet)", package)
        _run(["apt-get", "update", "-q"], env)
    _run(["apt-get", "install", "-y", "-q", package], env)


def _run(command: list[str], env: dict[str, str]) -> None:
    logger.info("running %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(f"`{' '.join(command)}` failed (exit {done.returncode}): {' '.join(tail)}")
