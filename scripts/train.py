#!/usr/bin/env python
"""Fully train one architecture: ``python scripts/train.py --arch default/<name> --epochs 30``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
