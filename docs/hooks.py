"""MkDocs hooks: add the generated reference and benchmark pages (``docs/gen_reference.py``) to the build."""

from __future__ import annotations

import importlib.util
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

_spec = importlib.util.spec_from_file_location("gen_reference", Path(__file__).with_name("gen_reference.py"))
assert _spec and _spec.loader
gen_reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_reference)

_pages: dict[str, str] = {}
_SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>~?\.?([^<]*)</code>")
_links = tempfile.TemporaryDirectory(prefix="blocknas-docs-")


def _griffe_path() -> str:
    """A folder holding ``blocknas/{blocks,search,spaces}`` as links to the repo's folders.

    mkdocstrings (griffe) finds a package by its folder name; this repo maps three top-level folders
    into the ``blocknas`` namespace (``[tool.setuptools.package-dir]``), which griffe cannot follow.
    """
    root = Path(_links.name)
    (root / "blocknas").mkdir()
    (root / "blocknas" / "__init__.py").touch()  # a package, not a namespace: griffe prefers any module to those
    for name in ("blocks", "search", "spaces"):
        (root / "blocknas" / name).symlink_to(gen_reference.REPO_ROOT / name, target_is_directory=True)
    return str(root)


@event_priority(100)  # before mkdocstrings' own on_config, which takes its search path from sys.path
def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Generate the pages once per build, and list every benchmark page under the nav's Benchmarks.

    Also puts :func:`_griffe_path` first on ``sys.path``, which mkdocstrings searches (here, not at
    import: mkdocs restores ``sys.path`` after importing a hook). First, because the folder of the
    ``mkdocs`` script (``sys.path[0]``) holds the ``blocknas`` console script, which griffe would take.
    """
    if not Path(_links.name, "blocknas").is_dir():
        sys.path.insert(0, _griffe_path())
    _pages.clear()
    _pages.update(gen_reference.all_pages())
    benchmarks: list[Any] = [{"Overview": "benchmarks/index.md"}]
    for path in _pages:
        if path.startswith("benchmarks/"):
            benchmarks.append({Path(path).stem: path})
    config.nav = [
        {"Benchmarks": benchmarks} if item == {"Benchmarks": "benchmarks/index.md"} else item
        for item in config.nav or []
    ]
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the generated pages as if they were files in ``docs/``."""
    for path, text in _pages.items():
        files.append(File.generated(config, path, content=text))
    return files


def on_page_content(html: str, page: Page, **_: Any) -> str:
    """Docstrings cross-reference in Sphinx's roles (``:class:`X```); show them as plain code."""
    return _SPHINX_ROLE.sub(r"<code>\1</code>", html)


def on_shutdown() -> None:
    """Remove the links :func:`_griffe_path` made."""
    _links.cleanup()
