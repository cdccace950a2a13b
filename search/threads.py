"""Thread pinning: torch's intra-/inter-op thread counts, set for a block of code and restored after."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

__all__ = ["pinned_threads"]

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
