"""Matplotlib without a display, and one way to save a figure (every PNG blocknas writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .files import atomic_write

__all__ = ["DPI", "pyplot", "save_figure"]

DPI = 150


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write as PNG at :data:`DPI` (creating the folder) and close ``fig``.

    The file is replaced atomically: two workers finishing one study at once write the same
    ``pareto.png``, and one may be uploading it while the other rewrites it (an upload whose
    file shrank under it hung the tracking server's request).
    """
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
    finally:
        pyplot().close(fig)
