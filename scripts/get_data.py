#!/usr/bin/env python
"""Fetch a study's dataset if it is not on disk yet: ``python scripts/get_data.py --config configs/default.yaml``
(the same as ``blocknas data --config ...``): where the files are, or how they were fetched; exit status 2
with one paragraph when they cannot be had."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", *sys.argv[1:]]))
