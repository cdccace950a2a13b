"""Start N identical local worker processes on one study (``make workers N=2``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from blocknas.search.tracking import mask_url

__all__ = ["launch_workers", "threads_per_worker"]

log = logging.getLogger(__name__)


def threads_per_worker(n_workers: int, cores: int | None = None) -> int:
    """Threads each worker may use so that ``n_workers × threads <= cores``, but at least 1
    (so more workers than cores do oversubscribe, one thread each)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(1, n_workers))


def launch_workers(n_workers: int, search_args: Sequence[str], *, cores: int | None = None) -> int:
    """Run ``blocknas search <search_args>`` in ``n_workers`` processes; returns the worst exit code.

    Every worker is the same command; the study and its MLflow parent run are created by
    whichever starts first. Each gets ``OMP_NUM_THREADS``/``BLOCKNAS_THREADS`` so the
    machine is not oversubscribed.
    """
    threads = threads_per_worker(n_workers, cores)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "BLOCKNAS_THREADS": str(threads),
    }
    command = [sys.executable, "-m", "blocknas.search.cli", "search", *search_args]
    log.info("starting %d workers with %d thread(s) each: %s", n_workers, threads, mask_url(" ".join(command)))
    procs = [subprocess.Popen(command + (["--no-progress"] if i else []), env=env) for i in range(n_workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        codes = [p.wait() for p in procs]
    return max(codes, key=lambda c: (c != 0, abs(c)))
