"""Every name shared through Optuna or MLflow is spelled once, in its home; everywhere else imports it.

The homes are small modules of string constants (MLflow tags and metric names; the study's and
trial's attribute keys). Their constants are read with ``ast``, then every module of the package
is scanned for a bare string literal that spells one:

- a dotted name (``blocknas.state``, ``screen.kept_score``, the ``latency.fp.`` prefix), or any
  ``blocknas.<name>`` tag, anywhere, f-string prefixes included;
- any registered name (``latency_ms``, ``accuracy``, ...) where it is used as one: an Optuna
  attribute key (``set_user_attr``, ``user_attrs[...]``, ``.get``, ``in``), an MLflow tag or
  metric key (``tags=``/``metrics=`` dicts, ``set_tag``, ``run.data.tags``/``metrics``) or a
  list of metric names. Elsewhere a plain word such as ``"arch"`` may mean something else;
- any string literal given as the value of a tag whose values are names too (``STATE_TAG``: its
  values ``STATE_COMPLETE``, ``STATE_FAILED``, ... live beside it), written or read:
  ``{STATE_TAG: "failed"}``, ``set_tag(run, STATE_TAG, "failed")``, ``tag_equals(STATE_TAG, "failed")``,
  ``tags.get(STATE_TAG) == "failed"``, and the literals of a variable that stands there.

The checker is also run on small planted trees, to show that it fails.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("blocks", "spaces", "search", "scripts")
HOMES = (
    "search/tracking/names.py",  # MLflow tags and metric names
    "search/tracking/attrs.py",  # attribute keys tracking reads (run ids, the worker, retries)
    "search/tracking/claims.py",  # the set-up claim's own two attribute keys
    "search/study/attrs.py",  # every other study and trial attribute key
    "search/latency/measure.py",  # a latency measurement's own metrics (without importing MLflow)
)
TAG = re.compile(r"blocknas\.([a-z_][a-z0-9_.]*)?")  # a tag, or the start of one built in an f-string
MODULE_PATHS = ("blocknas.blocks.", "blocknas.search", "blocknas.spaces")
NAME_USES = {"set_user_attr", "set_system_attr", "set_tag", "delete_tag", "get_metric_history", "set_metric_names"}
NAME_MAPS = {"user_attrs", "system_attrs", "tags", "metrics"}
NAME_ARGS = {"tags", "metrics"}
VALUED_TAGS = {"STATE_TAG"}  # tags whose values are shared names too, spelled in the tag's home


def registered(root: Path, homes: tuple[str, ...]) -> dict[str, set[str]]:
    """Name → the home files that define it (module-level ``UPPER_CASE = "..."``)."""
    names: dict[str, set[str]] = {}
    for home in homes:
        for node in ast.parse((root / home).read_text()).body:
            target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and target.id.isupper() and isinstance(value, ast.Constant):
                if isinstance(value.value, str):
                    names.setdefault(value.value, set()).add(home)
    return names


def _is_name_map(node: ast.AST) -> bool:
    """``x.user_attrs``, ``run.data.tags``, ``run.data.metrics``, ...: a mapping keyed by shared names."""
    return isinstance(node, ast.Attribute) and node.attr in NAME_MAPS


def _used_as_names(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string literals that stand where a shared name is used as an attribute, tag or metric key."""
    for node in ast.walk(tree):
        value: ast.AST | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in NAME_USES:
                yield from (a for a in node.args if isinstance(a, ast.Constant))
            elif node.func.attr in ("get", "pop", "setdefault") and _is_name_map(node.func.value) and node.args:
                value = node.args[0]
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg in NAME_ARGS:
                    yield from _dict_keys(keyword.value)
        elif isinstance(node, ast.Subscript) and _is_name_map(node.value):
            value = node.slice
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            if any(_is_name_map(c) for c in node.comparators):
                value = node.left
        elif isinstance(node, ast.Assign) and any(_names_a_map(t) for t in node.targets):
            yield from (c for c in ast.walk(node.value) if isinstance(c, ast.Constant))
        if isinstance(value, ast.Constant):
            yield value


def _names_a_map(target: ast.AST) -> bool:
    name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
    return name.lower() in NAME_ARGS or name.lower().endswith("metric_names")


def _dict_keys(node: ast.AST) -> Iterator[ast.Constant]:
    if isinstance(node, ast.Dict):
        yield from (k for k in node.keys if isinstance(k, ast.Constant))
    elif isinstance(node, ast.DictComp) and isinstance(node.key, ast.JoinedStr) and node.key.values:
        first = node.key.values[0]
        if isinstance(first, ast.Constant):
            yield first


def _is_valued_tag(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id in VALUED_TAGS) or (
        isinstance(node, ast.Attribute) and node.attr in VALUED_TAGS
    )


def _mentions_valued_tag(node: ast.AST) -> bool:
    return any(_is_valued_tag(n) for n in ast.walk(node))


def _tag_values(tree: ast.AST) -> Iterator[ast.Constant]:
    """The string literals that stand as a valued tag's value: in a dict under the tag, after the tag
    in a call's arguments (not a ``.get`` default), on the other side of a comparison with the tag's value; through a variable,
    the literals assigned to it in the module."""
    assigned: dict[str, list[ast.AST]] = {}
    values: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.Dict):
            values += [v for k, v in zip(node.keys, node.values) if k is not None and _is_valued_tag(k)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) not in ("get", "pop", "setdefault"):
            tagged = [i for i, arg in enumerate(node.args) if _is_valued_tag(arg)]
            values += node.args[tagged[0] + 1 :] if tagged else []
        elif isinstance(node, ast.Compare) and any(_mentions_valued_tag(s) for s in (node.left, *node.comparators)):
            values += [s for s in (node.left, *node.comparators) if not _mentions_valued_tag(s)]
    for value in values:
        for expr in [value, *assigned.get(value.id, ())] if isinstance(value, ast.Name) else [value]:
            yield from (c for c in ast.walk(expr) if isinstance(c, ast.Constant) and isinstance(c.value, str))


def _dotted(text: str, names: dict[str, set[str]]) -> str | None:
    """The registered dotted name or ``blocknas.`` tag ``text`` spells or begins with, if any; inside an
    MLflow filter (``tags.`blocknas.study` = 'x'``), the one between backticks."""
    for word in (text, *re.findall(r"(?:tags|metrics|params)\.`([^`]+)`", text)):
        for name in names:
            if "." in name and (word == name or (name.endswith(".") and word.startswith(name))):
                return name
        if TAG.fullmatch(word) and not word.startswith(MODULE_PATHS):
            return word
    return None


def bare_spellings(root: Path, folders: tuple[str, ...], homes: tuple[str, ...]) -> list[str]:
    """``file:line: 'name'`` for every bare spelling of a shared name outside its home."""
    names = registered(root, homes)
    found = set()
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(), relative)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    name = _dotted(node.value, names)
                    if name is not None and relative not in names.get(name, ()):
                        found.add((relative, node.lineno, name))
            for node in _used_as_names(tree):
                if isinstance(node.value, str) and node.value in names and relative not in names[node.value]:
                    found.add((relative, node.lineno, node.value))
            if relative not in homes:
                found.update((relative, node.lineno, str(node.value)) for node in _tag_values(tree))
    return [f"{file}:{line}: {name!r}" for file, line, name in sorted(found)]


def test_no_module_spells_a_shared_name_outside_its_home() -> None:
    assert bare_spellings(ROOT, FOLDERS, HOMES) == []


def test_every_home_registers_names() -> None:
    names = registered(ROOT, HOMES)
    expected = {"blocknas.state", "latency.fp.", "latency_ms", "accuracy", "screen.kept_score", "blocknas.kind"}
    assert expected <= set(names)
    states = {"complete", "pruned", "over_budget", "diverged", "failed", "killed"}  # blocknas.state's values
    assert all("search/tracking/names.py" in names.get(state, ()) for state in states)


HOME = {"pkg/names.py": 'STATE_TAG = "blocknas.state"\nLATENCY_ATTR = "latency_ms"\nFP_TAG = "latency.fp."\n'}


@pytest.mark.parametrize(
    "text",
    [
        'tags = {"blocknas.state": "complete"}\n',
        'def f(k):\n    return {f"latency.fp.{k}": 1}\n',
        'def f(tags):\n    return {f"blocknas.{k}": v for k, v in tags.items()}\n',
        'tag = "blocknas.unregistered"\n',
        'def f(trial):\n    trial.set_user_attr("latency_ms", 1.0)\n',
        'def f(t):\n    return t.user_attrs["latency_ms"]\n',
        'def f(t):\n    return "latency_ms" in t.user_attrs\n',
        'def f(run):\n    return run.data.metrics.get("latency_ms")\n',
        'def f(tracker, run_id, x):\n    tracker.log(run_id, metrics={"latency_ms": x})\n',
        'metric_names = ["accuracy", "latency_ms"]\n',
        "def f(study):\n    return f\"tags.`blocknas.study` = '{study}'\"\n",
        # a value of blocknas.state, written or read
        "from .names import STATE_TAG\ntags = {STATE_TAG: 'complete'}\n",
        "def f(log, run, stop):\n    log(run, tags={STATE_TAG: 'killed' if stop else STATE_FAILED})\n",
        "def f(log, run, over):\n    state = 'over_budget' if over else STATE_PRUNED\n    log(run, tags={STATE_TAG: state})\n",
        "def f(client, run_id):\n    client.set_tag(run_id, STATE_TAG, 'killed')\n",
        "def f(study):\n    return tag_equals(STATE_TAG, 'failed')\n",
        "def f(run):\n    return run.data.tags.get(STATE_TAG, '') == 'failed'\n",
        "def f(tags):\n    return tags[names.STATE_TAG] in ('failed', STATE_KILLED)\n",
    ],
)
def test_the_checker_finds_a_planted_bare_spelling(tmp_path: Path, text: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/names.py").write_text(HOME["pkg/names.py"])
    (tmp_path / "pkg/user.py").write_text(text)
    assert len(bare_spellings(tmp_path, ("pkg",), ("pkg/names.py",))) == 1


@pytest.mark.parametrize(
    "text",
    [
        "from .names import STATE_COMPLETE, STATE_TAG\ntags = {STATE_TAG: STATE_COMPLETE}\n",
        "def f(client, run_id):\n    client.set_tag(run_id, STATE_TAG, STATE_KILLED)\n",
        "def f(run):\n    return run.data.tags.get(STATE_TAG, '') in (STATE_FAILED, STATE_KILLED)\n",
        'counts = {"failed": 0, "complete": 0}\n',  # words that are no tag's value here
        'config = {"latency_ms": 2.0}\n',  # a config key that shares the word, not the attribute
        'import logging\nlog = logging.getLogger("blocknas.search.study")\n',
        'FORMAT = "blocknas.train/1"\n',
        'MatchMetric = ["latency_ms"]\n',  # a config choice, not a list of metric names
        'def f():\n    """Reads ``blocknas.state`` tags."""\n',
    ],
)
def test_the_checker_passes_imports_and_other_meanings(tmp_path: Path, text: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/names.py").write_text(HOME["pkg/names.py"])
    (tmp_path / "pkg/user.py").write_text(text)
    assert bare_spellings(tmp_path, ("pkg",), ("pkg/names.py",)) == []
