"""The docs site: ``mkdocs build --strict`` passes, its generated reference is complete, and strict means strict.

The build is the real one (``mkdocs.yml``, the hooks that generate the config, command-line and
benchmark pages, mkdocstrings over the package). The planted-link test builds a two-page site with
this project's link validation settings, to show that a broken link or anchor fails the build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 250


def _mkdocs(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _gen_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = _mkdocs(["-d", str(site)], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (site / "reference" / "config" / "index.html").read_text()
    for key in ("data.max_train_samples", "latency.rel_precision", "pruning.reduction_factor", "stages[].widths"):
        assert key in config, f"the config reference has no {key}"
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for flag in ("blocknas search", "--n-trials", "blocknas latency calibrate", "--allow-remote"):
        assert flag in cli, f"the command-line reference has no {flag}"
    for result_file in (ROOT / "benchmarks" / "results").glob("*.md"):
        assert (site / "benchmarks" / result_file.stem / "index.html").is_file(), f"no page for {result_file.name}"
    api = (site / "reference" / "api" / "blocks" / "index.html").read_text()
    assert "register_block" in api and "ArchConfig" in api


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ("[the guide](guides/missing.md)", "guides/missing.md"),
        ("[a section](other.md#no-such-heading)", "no-such-heading"),
    ],
)
def test_strict_build_fails_on_a_broken_link(tmp_path: Path, page: str, problem: str) -> None:
    project = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    site_config = {
        "site_name": "planted",
        "strict": True,
        "validation": project["validation"],
        "markdown_extensions": ["toc"],
    }
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f"# Home\n\nSee {page}.\n")
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## A heading\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(site_config))
    result = _mkdocs(["-d", str(tmp_path / "site")], tmp_path)
    assert result.returncode != 0, "a strict build passed with a broken link"
    assert problem in result.stdout + result.stderr


def test_every_config_key_is_documented() -> None:
    """Each key of each YAML file blocknas reads has a description in its dataclass's ``Attributes:``."""
    assert _gen_reference().undocumented_keys() == []


def test_readme_is_at_most_250_lines() -> None:
    """The README says what blocknas answers, sets it up and links the docs; the rest lives in ``docs/``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move text to docs/"
    )


def test_readme_links_resolve() -> None:
    """Every relative link and image of the README names a file of the repository (its docs pages, its figure)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))
    local = [t.split("#")[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert any(t.startswith("docs/") and t.endswith(".md") for t in local), "the README links no docs page"
    assert [t for t in local if not (ROOT / t).is_file()] == []
