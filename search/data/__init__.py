"""Datasets: configs, sources (digits, synthetic, idx/Fashion-MNIST, image folders, CIFAR) and in-memory splits."""

from __future__ import annotations

from .fetch import fetch_dataset, read_data_section
from .idx import (
    DATA_ENV_VAR,
    IDX_DATASETS,
    IdxDataset,
    download_idx,
    find_idx_folder,
    read_idx,
    read_idx_dataset,
    standard_places,
)
from .sources import DataError, RawData, make_synthetic, read_cifar, read_digits, read_image_folder
from .splits import DataConfig, DataSplit, clear_data_cache, load_data, load_data_for

__all__ = [
    "DATA_ENV_VAR",
    "IDX_DATASETS",
    "DataConfig",
    "DataError",
    "DataSplit",
    "IdxDataset",
    "RawData",
    "clear_data_cache",
    "download_idx",
    "fetch_dataset",
    "find_idx_folder",
    "load_data",
    "load_data_for",
    "make_synthetic",
    "read_cifar",
    "read_data_section",
    "read_digits",
    "read_idx",
    "read_idx_dataset",
    "read_image_folder",
    "standard_places",
]
