"""``blocknas --help`` and every ``blocknas <cmd> --help`` answer without importing torch, timm or the stores.

Help runs in a fresh interpreter (this one has torch already): it walks the real parser for
every subcommand, nested ones included, asks each for ``--help`` and reports which heavy
modules are in ``sys.modules`` afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "optuna", "mlflow", "onnxruntime", "scipy", "numpy", "matplotlib")

WALK = """
import argparse, contextlib, io, json, sys
from blocknas.search.cli import build_parser, main

def commands(parser, prefix):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, [*prefix, name])

heavy = {heavy!r}
seen = {{}}
for argv in list(commands(build_parser(), [])):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main([*argv, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, (argv, exc.code)
    assert "usage: blocknas" in out.getvalue(), argv
    seen[" ".join(argv) or "(none)"] = [m for m in heavy if m in sys.modules]
print(json.dumps(seen))
"""


def test_every_help_imports_neither_torch_nor_timm_nor_the_stores() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WALK.format(heavy=HEAVY)], capture_output=True, text=True, timeout=300, check=True
    )
    seen = json.loads(out.stdout)
    assert {"(none)", "search", "export", "latency-agent", "latency calibrate"} <= set(seen)
    assert {argv: modules for argv, modules in seen.items() if modules} == {}
