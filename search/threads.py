"""Torch's process-wide state, set for a block of code and restored after: thread counts, the CPU RNG."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

__all__ = ["MAX_THREADS", "pinned_threads", "seeded_rng"]

MAX_THREADS = 1024
"""Most threads any setting may ask for (far above a machine's cores; torch crashes on absurd counts)."""

log = logging.getLogger(__name__)


@contextlib.contextmanager
def pinned_threads(threads: int, inter_op_threads: int) -> Iterator[None]:
    """Pin torch's intra-op thread count (restored on exit) and, where still possible, inter-op.

    PyTorch allows ``set_num_interop_threads`` only before any inter-op work has run in the
    process and never allows undoing it, so the inter-op count is set once if it can be and
    otherwise left as it is with a warning (eager inference at batch 1 uses no inter-op
    parallelism; ONNX Runtime takes both counts from its session options).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != inter_op_threads:
        try:
            torch.set_num_interop_threads(inter_op_threads)
        except RuntimeError:
            log.warning(
                "torch inter-op threads stay %d (wanted %d): PyTorch fixes them at first use",
                torch.get_num_interop_threads(),
                inter_op_threads,
            )
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded to ``seed``, and restore its state after.

    For networks that must come out the same every time (the reference and lookup-table
    modules) without moving the caller's random stream.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
