#!/usr/bin/env python
"""Run (or resume) a search study: ``python scripts/search.py --config configs/default.yaml``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["search", *sys.argv[1:]]))
