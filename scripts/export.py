#!/usr/bin/env python
"""Export a trained checkpoint to ONNX and TorchScript: ``python scripts/export.py --checkpoint runs/train/x/best.safetensors``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
