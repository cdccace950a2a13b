"""The package layout: layers import one way, no module import loop, no reach into another subpackage's privates.

Every module's imports are read with ``ast``, function-level ones included, so a loop cannot
hide behind a late import. The checker is also run on a small tree with a planted upward
import, to show that it fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"blocknas.blocks": "blocks", "blocknas.spaces": "spaces", "blocknas.search": "search"}

# blocknas.search's layers, lowest first; a module may import its own layer or a lower one.
SEARCH_LAYERS: dict[str, int] = {
    "_helpers": 0,  # modules directly in search/ (files, threads, figures, interrupts)
    "data": 1,
    "latency": 1,
    "tracking": 1,
    "training": 2,
    "study": 3,
    "ablation": 4,
    "report": 5,
    "cli": 6,
    "__init__": 6,
}
PACKAGE_ORDER = {"blocknas.blocks": 0, "blocknas.spaces": 1, "blocknas.search": 2}


def module_files(packages: dict[str, str], root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under the mapped folders."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _imported_names(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Absolute dotted names an import node refers to (module, or module.attribute)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        for alias in node.names:
            yield f"{prefix}.{alias.name}"


def import_graph(packages: dict[str, str], root: Path) -> dict[str, set[tuple[str, str]]]:
    """Module → {(imported module, the name as written)} over all imports, function-level included."""
    modules = module_files(packages, root)
    graph: dict[str, set[tuple[str, str]]] = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported_names(node, module, path.name == "__init__.py"):
                target = name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.add((target, name))
        graph[module] = edges
    return graph


def _layer(module: str) -> tuple[int, int]:
    package = next(p for p in PACKAGE_ORDER if module == p or module.startswith(p + "."))
    if package != "blocknas.search":
        return PACKAGE_ORDER[package], 0
    rest = module.removeprefix("blocknas.search").lstrip(".").split(".")
    head = rest[0] or "__init__"
    if head not in SEARCH_LAYERS:
        head = "_helpers"
    return PACKAGE_ORDER[package], SEARCH_LAYERS[head]


def _subpackage(module: str) -> str:
    return module.rpartition(".")[0]


def violations(packages: dict[str, str], root: Path) -> list[str]:
    """Every upward import, every import cycle and every import of another subpackage's private name."""
    graph = import_graph(packages, root)
    problems = []
    for module, edges in sorted(graph.items()):
        for target, name in sorted(edges):
            if _layer(target) > _layer(module):
                problems.append(f"upward import: {module} imports {name}")
            private = [part for part in name.removeprefix(_subpackage(target)).split(".") if part.startswith("_")]
            own = module == target or module.startswith(_subpackage(target) + ".")
            if private and not own and not private[-1].startswith("__"):
                problems.append(f"private import: {module} imports {name}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[tuple[str, str]]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target, _ in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_the_real_tree_has_no_layer_violation_cycle_or_private_import() -> None:
    assert violations(PACKAGES, ROOT) == []


def test_search_is_one_subpackage_per_subsystem() -> None:
    folders = {p.name for p in (ROOT / "search").iterdir() if (p / "__init__.py").is_file()}
    assert folders == {"data", "latency", "tracking", "training", "study", "ablation", "report"}
    flat = {p.stem for p in (ROOT / "search").glob("*.py")}
    assert flat <= {
        "__init__",
        "agent_flags",
        "cli",
        "export_formats",
        "files",
        "threads",
        "figures",
        "interrupts",
        "latency_gate",
        "markdown",
        "pause_points",
        "seeding",
        "yaml_config",
    }, flat


def _plant(tmp_path: Path, files: dict[str, str]) -> dict[str, str]:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"blocknas.blocks": "blocks", "blocknas.spaces": "spaces", "blocknas.search": "search"}


CLEAN = {
    "blocks/__init__.py": "",
    "spaces/__init__.py": "from blocknas.blocks import x\n",
    "search/__init__.py": "",
    "search/files.py": "",
    "search/data/__init__.py": "from .sources import read\n",
    "search/data/sources.py": "from blocknas.search.files import lock\n",
    "search/study/__init__.py": "from .runner import run\n",
    "search/study/runner.py": "from blocknas.search.data import read\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert violations(_plant(tmp_path, CLEAN), tmp_path) == []


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        ("search/data/sources.py", "def f():\n    from blocknas.search.study import run\n", "upward import"),
        ("search/files.py", "from blocknas.search.data import read\n", "upward import"),
        ("blocks/__init__.py", "from blocknas.spaces import y\n", "upward import"),
        ("search/study/runner.py", "from blocknas.search.data.sources import _secret\n", "private import"),
        ("search/data/sources.py", "from .other import b\n", "import cycle"),
    ],
)
def test_checker_catches_a_planted_problem(tmp_path: Path, relative: str, text: str, expected: str) -> None:
    files = dict(CLEAN)
    files[relative] = files.get(relative, "") + text
    if expected == "import cycle":
        files["search/data/other.py"] = "from .sources import read\n"
    found = violations(_plant(tmp_path, files), tmp_path)
    assert any(problem.startswith(expected) for problem in found), found


def imports_of_test_modules(tests: Path) -> list[str]:
    """Every import of a test module (``test_*``) by a file under ``tests``: shared helpers live in
    ``tests/helpers/`` or ``conftest.py``, so editing one test file never breaks another's imports."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(part.startswith("test_") for name in names for part in name.split(".")):
                found.append(f"{path.relative_to(tests)}:{node.lineno} imports a test module")
    return found


TEST_A = "test_a"


def test_no_test_module_imports_another() -> None:
    assert imports_of_test_modules(ROOT / "tests") == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (f"from .{TEST_A} import tiny_config\n", 1),  # spelt through TEST_A so that grep finds no such import here
        (f"def f():\n    from tests.{TEST_A} import x\n", 2),
        ("from . import test_a\n", 1),
        ("from .helpers.configs import tiny_config\nimport tests.test_a\n", 2),
    ],
)
def test_the_test_import_check_catches_a_planted_import(tmp_path: Path, text: str, line: int) -> None:
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "configs.py").write_text("")
    (tmp_path / "test_b.py").write_text(text)
    assert imports_of_test_modules(tmp_path) == [f"test_b.py:{line} imports a test module"]


def misplaced_tests(tests: Path, root: Path) -> list[str]:
    """Test modules whose folder under ``tests/`` is not a package folder of the same path under ``root``.

    Tests of one package live in ``tests/<its path>/`` (``tests/search/study/`` for
    ``search/study/``); only project-wide checks (layout, names, docs, public API) sit in ``tests/``.
    """
    return [
        str(path.relative_to(tests))
        for path in sorted(tests.rglob("test_*.py"))
        if path.parent != tests and not (root / path.parent.relative_to(tests) / "__init__.py").is_file()
    ]


def test_tests_are_laid_out_like_the_package(tmp_path: Path) -> None:
    assert misplaced_tests(ROOT / "tests", ROOT) == []
    (tmp_path / "search" / "study").mkdir(parents=True)
    (tmp_path / "search" / "study" / "__init__.py").write_text("")
    for folder in ("tests/search/study", "tests/search/nowhere"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "test_x.py").write_text("")
    assert misplaced_tests(tmp_path / "tests", tmp_path) == ["search/nowhere/test_x.py"]
