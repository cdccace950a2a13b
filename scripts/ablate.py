#!/usr/bin/env python
"""Run (or resume) an ablation: ``python scripts/ablate.py --config configs/ablations/seed_blocks.yaml``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate", *sys.argv[1:]]))
