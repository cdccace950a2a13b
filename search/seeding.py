"""Seeded, side-effect-free random draws: a block of code with its own torch RNG state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["seeded_rng"]


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to ``seed``, and restore its state after.

    For networks that must come out the same every time (reference and lookup-table
    modules) without moving the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
