"""Datasets: configs, sources (digits, synthetic, image folders, CIFAR) and in-memory splits."""

from __future__ import annotations

from .sources import DataError, RawData, make_synthetic, read_cifar, read_digits, read_image_folder
from .splits import DataConfig, DataError, DataSplit, clear_data_cache, load_data, load_data_for

__all__ = [
    "DataConfig",
    "DataError",
    "DataError",
    "DataSplit",
    "RawData",
    "clear_data_cache",
    "load_data",
    "load_data_for",
    "make_synthetic",
    "read_cifar",
    "read_digits",
    "read_image_folder",
]
