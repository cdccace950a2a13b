#!/usr/bin/env python
"""Write a study's HTML/Markdown report: ``python scripts/report.py --config configs/default.yaml``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
