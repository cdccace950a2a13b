"""The formats a checkpoint exports to, importable without torch (``blocknas export --help`` lists them)."""

from __future__ import annotations

__all__ = ["FORMATS"]

FORMATS = ("onnx", "torchscript")
"""Every format :func:`blocknas.search.training.export_checkpoint` writes, in the order it writes them."""
