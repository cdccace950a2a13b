#!/usr/bin/env python
"""Fetch a study's dataset if it is not on disk yet: ``python scripts/get_data.py --config configs/default.yaml``.

Prints where the files are or how they were fetched (apt-get or torchvision); exit status 2
with one paragraph when they cannot be had.
"""

import argparse
import logging
import sys

from blocknas.blocks import ConfigError
from blocknas.search.data import DataError, fetch_dataset, read_data_section


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="study or ablation YAML whose data: section names the dataset")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(fetch_dataset(read_data_section(args.config)))
    except (ConfigError, DataError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
