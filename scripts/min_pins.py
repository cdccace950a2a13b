"""The declared minimum versions of some dependencies, read from pyproject.toml (for ``make test-min``).

``python scripts/min_pins.py optuna mlflow timm`` prints ``optuna==5.0 mlflow==3.9 timm==1.0.12``;
with ``--check`` it instead verifies that the running interpreter has exactly those versions
installed (exit status 1 and one line per mismatch otherwise), so the tests that follow are
known to run on the minimums and not on a newer copy found later on ``sys.path``.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest (the dev extra) brings tomli before Python 3.11
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def minimums(names: list[str], pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Name → the version after ``>=`` in ``[project] dependencies``; every name must have one."""
    declared = {}
    for requirement in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)", requirement.strip())
        if match:
            declared[match[1].lower()] = match[2]
    missing = [name for name in names if name.lower() not in declared]
    if missing:
        raise SystemExit(f"{pyproject}: no '>=' minimum declared for {', '.join(missing)}")
    return {name: declared[name.lower()] for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="distribution names, e.g. optuna mlflow timm")
    parser.add_argument("--check", action="store_true", help="verify the installed versions instead of printing")
    args = parser.parse_args(argv)
    pins = minimums(args.names)
    if not args.check:
        print(" ".join(f"{name}=={minimum}" for name, minimum in pins.items()))
        return 0
    wrong = []
    for name, minimum in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = "not installed"
        if installed == "not installed" or Version(installed) != Version(minimum):
            wrong.append(f"{name}: {installed} installed, the declared minimum is {minimum}")
    print("\n".join(wrong) or "on the declared minimums: " + ", ".join(f"{n} {v}" for n, v in pins.items()))
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
