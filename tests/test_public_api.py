"""The public surface is written on purpose: each package ``__init__`` lists its names, and there are few.

A package's public names are its ``__all__``; it must be a literal list in the ``__init__``
(no ``from .x import *``, no ``[*module.__all__, ...]``), every name in it must resolve, and
the total over the packages stays under ``MAX_PUBLIC_NAMES`` (570 star-re-exported names
before the lists were written by hand, 271 after). ``blocknas.search`` loads its names lazily
(``blocknas --help`` must not import torch); its ``TYPE_CHECKING`` imports, its runtime map
and its ``__all__`` must name the same things.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "blocknas.blocks": "blocks",
    "blocknas.spaces": "spaces",
    "blocknas.search": "search",
    **{f"blocknas.search.{sub}": f"search/{sub}" for sub in ("ablation", "data", "latency", "report", "study")},
    **{f"blocknas.search.{sub}": f"search/{sub}" for sub in ("tracking", "training")},
}
MAX_PUBLIC_NAMES = 290


def literal_all(init: Path) -> list[str] | None:
    """The ``__all__`` of a package ``__init__`` when it is a literal list of strings, else None."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            if isinstance(node.value, ast.List) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts
            ):
                return [e.value for e in node.value.elts]
            return None
    return None


def star_imports(init: Path) -> list[str]:
    """The modules an ``__init__`` star-imports."""
    tree = ast.parse(init.read_text())
    return [
        "." * node.level + (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)
    ]


def public_names() -> dict[str, list[str]]:
    """Package → its ``__all__`` as imported (how the surface is counted, before and after)."""
    return {package: list(importlib.import_module(package).__all__) for package in PACKAGES}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_all_is_a_literal_list_without_star_imports(package: str) -> None:
    init = ROOT / PACKAGES[package] / "__init__.py"
    assert star_imports(init) == [], f"{init}: list the names, don't re-export every module's __all__"
    names = literal_all(init)
    assert names is not None, f"{init}: __all__ must be a literal list of strings"
    assert len(names) == len(set(names)), f"{init}: a name listed twice"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_the_surface_stays_small() -> None:
    counts = {package: len(names) for package, names in public_names().items()}
    assert sum(counts.values()) <= MAX_PUBLIC_NAMES, counts


def test_lazy_search_names_are_typed_and_agree() -> None:
    """``blocknas.search``: the TYPE_CHECKING imports, the runtime map and ``__all__`` name the same things."""
    search = importlib.import_module("blocknas.search")
    tree = ast.parse((ROOT / "search" / "__init__.py").read_text())
    typed: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module
                typed.setdefault(stmt.module, set()).update(alias.name for alias in stmt.names)
    assert typed == {sub: set(names) for sub, names in search._EXPORTS.items()}
    assert sorted(search.__all__) == sorted(name for names in typed.values() for name in names)
    for sub, names in typed.items():
        assert names <= set(importlib.import_module(f"blocknas.search.{sub}").__all__), sub
