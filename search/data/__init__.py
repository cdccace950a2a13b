"""Datasets: configs, sources (digits, synthetic, idx/Fashion-MNIST, image folders, CIFAR) and in-memory splits.

The names scripts, benchmarks, tests and the docs import from here; the rest is imported from its module.
"""

from __future__ import annotations

from .fetch import fetch_dataset, read_data_section
from .idx import IDX_DATASETS, read_idx, standard_places
from .preprocessing import PREPROCESSING_KEY, Preprocessing
from .sources import DataError
from .splits import DataConfig, DataSplit, clear_data_cache, load_data

__all__ = [
    "IDX_DATASETS",
    "PREPROCESSING_KEY",
    "DataConfig",
    "DataError",
    "DataSplit",
    "Preprocessing",
    "clear_data_cache",
    "fetch_dataset",
    "load_data",
    "read_data_section",
    "read_idx",
    "standard_places",
]
