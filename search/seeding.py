"""Seeds: the one range every seed setting (study, data split, ablation, training) must lie in."""

from __future__ import annotations

from blocknas.blocks.schema import check_range

__all__ = ["MAX_SEED", "check_seed"]

MAX_SEED = 2**32 - 1
"""Largest seed: NumPy's legacy seeding, the narrowest of the generators a seed reaches, takes 0 to 2**32 - 1."""


def check_seed(seed: int, key: str = "seed") -> None:
    """Raise a :class:`~blocknas.blocks.ConfigError` at ``key`` unless ``0 <= seed <= MAX_SEED``."""
    check_range(seed, key, 0, MAX_SEED)
