"""Matplotlib without a display, and one way to save a figure (every PNG blocknas writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DPI", "pyplot", "save_figure"]

DPI = 150


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write as PNG at :data:`DPI` (creating the folder) and close ``fig``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path
