"""The README's Python example runs as written: register a block, search, build the best network in timm.

Only its trial count is lowered (6 → 3) to keep the test short; everything else is the text itself,
run in a fresh folder with its default stores (the MLflow store already migrated). "Getting started"
in the docs shows the same example, character for character.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"


def python_example(path: Path, heading: str) -> str:
    """The first ```python block after ``heading`` in ``path``."""
    text = path.read_text(encoding="utf-8")
    assert heading in text, f"{path.name} has no {heading!r} section"
    match = re.search(r"```python\n(.*?)\n```", text[text.index(heading) :], re.S)
    assert match, f"no python code block after {heading!r} in {path.name}"
    return match.group(1)


@pytest.mark.usefixtures("isolated_registry")
def test_readme_example_runs(in_tmp_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = python_example(README, "## In Python")
    assert '"n_trials": 6' in code, "the example no longer sets n_trials: 6; update this test's shortcut"
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(compile(code.replace('"n_trials": 6', '"n_trials": 3'), str(README), "exec"), namespace)

    best, model = namespace["best"], namespace["model"]
    assert best.name in capsys.readouterr().out  # type: ignore[attr-defined]
    logits = model(torch.randn(2, best.arch.in_chans, 16, 16))  # type: ignore[attr-defined, operator]
    assert logits.shape == (2, 10)
    exported = sorted((in_tmp_dir / "configs" / "discovered" / "demo").glob("t*.yaml"))
    assert exported and any(best.name in path.name for path in exported)  # type: ignore[attr-defined]


def test_getting_started_shows_the_readme_example() -> None:
    assert python_example(GETTING_STARTED, "## In Python") == python_example(README, "## In Python")
