#!/usr/bin/env python
"""Serve MLflow (or ``--optuna``: optuna-dashboard) on 127.0.0.1: ``python scripts/dashboard.py``."""

import sys

from blocknas.search.cli import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
