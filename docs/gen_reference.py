"""Generate the docs site's reference pages: every config key, the command line, the benchmark results.

The pages are written from the code, never by hand: config keys from the config dataclasses'
fields and their docstrings' ``Attributes:`` sections, the command line from ``blocknas``'s own
argparse parser, benchmark pages from ``benchmarks/results/*.md``. ``docs/hooks.py`` adds them to
every ``mkdocs build``; ``python docs/gen_reference.py OUT`` writes them to a folder to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results"

_ROLE = re.compile(r":[a-z]+:`~?\.?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")


def _roots() -> list[tuple[str, str, type]]:
    """(title, how it is used, dataclass) of every YAML file a user writes."""
    from blocknas.blocks import ArchConfig
    from blocknas.search.ablation import AblationConfig
    from blocknas.search.study import StudyConfig
    from blocknas.search.training import FullTrainConfig
    from blocknas.spaces import SearchSpace

    return [
        ("Study", "`blocknas search --config` (also `workers`, `validate`, `doctor`, `report`)", StudyConfig),
        ("Ablation", "`blocknas ablate --config`", AblationConfig),
        ("Full training", "`blocknas train --config`", FullTrainConfig),
        ("Search space", "the study's `space:`, or `SearchSpace.load(path)`", SearchSpace),
        ("Architecture", "`timm.create_model('blocknet', arch=...)`, `ArchConfig.from_yaml(path)`", ArchConfig),
    ]


def rst_to_markdown(text: str) -> str:
    """Docstring markup as Markdown: ``:class:`X``` and ````x```` become ```x```."""
    return _LITERAL.sub(r"`\1`", _ROLE.sub(r"`\1`", text))


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name → description from the ``Attributes:`` sections of ``cls`` and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = (klass.__dict__.get("__doc__") or "").expandtabs().splitlines()
        text = inspect.cleandoc("\n".join(lines[1:])) if len(lines) > 1 else ""
        inside, name = False, None
        for line in text.splitlines():
            if line.strip() == "Attributes:":
                inside = True
                continue
            if not inside:
                continue
            if line and not line.startswith(" "):
                break
            match = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
            if match:
                name = match.group(1)
                docs[name] = match.group(2).strip()
            elif name and line.strip():
                docs[name] += " " + line.strip()
    return {key: rst_to_markdown(value) for key, value in docs.items()}


def summary(cls: type) -> str:
    """The first paragraph of a class's docstring, as Markdown."""
    doc = inspect.getdoc(cls) or ""
    return rst_to_markdown(" ".join(doc.split("\n\n")[0].split()))


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def format_type(tp: Any) -> str:
    """A field's type as a reader of YAML sees it."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " or ".join(f"`{_yaml(a)}`" for a in _args(tp))
    if _is_union(tp):
        return " or ".join(format_type(a) for a in _args(tp))
    if origin is tuple:
        args = _args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {format_type(args[0])}"
        return "[" + ", ".join(format_type(a) for a in args) + "]"
    if origin is dict:
        key, value = _args(tp)
        return f"mapping {format_type(key)} → {format_type(value)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp)


def _yaml(value: Any) -> str:
    if value == "":
        return '""'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "see below"
    return f"`{_yaml(value)}`"


def _nested(tp: Any) -> tuple[type, str] | None:
    """The config dataclass a field holds, and the key suffix that reaches it (``""``, ``[]``, ``.<name>``)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp, ""
    if _is_union(tp):
        for arg in _args(tp):
            found = _nested(arg)
            if found:
                return found
    origin = typing.get_origin(tp)
    if origin is tuple and _args(tp) and dataclasses.is_dataclass(_args(tp)[0]):
        return _args(tp)[0], "[]"
    if origin is dict and dataclasses.is_dataclass(_args(tp)[1]):
        return _args(tp)[1], ".<name>"
    return None


def config_fields(cls: type) -> Iterator[tuple[str, Any, dataclasses.Field[Any]]]:
    """The YAML keys of a config dataclass: (name, resolved type, field); ``source`` is not a key."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name != "source" and f.init:
            yield f.name, hints[f.name], f


def undocumented_keys() -> list[str]:
    """Every config key whose dataclass docstring does not describe it (the reference would show it blank)."""
    missing: list[str] = []

    def walk(cls: type, prefix: str, seen: frozenset[type]) -> None:
        docs = attribute_docs(cls)
        for name, tp, _ in config_fields(cls):
            nested = _nested(tp)
            if name not in docs and not nested:
                missing.append(f"{prefix}{name} ({cls.__qualname__})")
            if nested and nested[0] not in seen:
                walk(nested[0], f"{prefix}{name}{nested[1]}.", seen | {nested[0]})

    for _, _, cls in _roots():
        walk(cls, f"{cls.__name__}: ", frozenset({cls}))
    return missing


def _cell(text: str) -> str:
    """Text for a table cell: one line, a ``|`` outside code spans escaped (inside one it cannot split the row)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(part if i % 2 else part.replace("|", "\\|") for i, part in enumerate(parts))


def _config_section(root: type, cls: type, prefix: str, level: int, seen: frozenset[type]) -> list[str]:
    docs = attribute_docs(cls)
    rows, below = [], []
    for name, tp, f in config_fields(cls):
        key = f"{prefix}{name}"
        nested = _nested(tp)
        description = docs.get(name, "")
        if nested and nested[0] not in seen:
            child, suffix = nested
            anchor = re.sub(r"[^a-z0-9]+", "-", f"{root.__name__}-{key}".lower()).strip("-")
            description = (description + " " if description else "") + f"[Keys below](#{anchor})."
            below.append((key + suffix, child, anchor))
        rows.append(f"| `{key}` | {_cell(format_type(tp))} | {_cell(_default(f))} | {_cell(description)} |")
    lines = ["| key | type | default | description |", "|---|---|---|---|", *rows, ""]
    for key, child, anchor in below:
        heading = "#" * min(level, 6)
        lines += [f"{heading} `{key}` {{#{anchor}}}", "", f"`{child.__name__}`: {summary(child)}", ""]
        lines += _config_section(root, child, key + ".", level + 1, seen | {child})
    return lines


def config_reference() -> str:
    """The page of every config key, one section per kind of YAML file."""
    lines = [
        "# Configuration keys",
        "",
        "Every key of every YAML file blocknas reads, generated from the config dataclasses and their",
        "docstrings (`docs/gen_reference.py`). An unknown key, a wrong type or a value out of range is a",
        "config error that names the file and the key path, exit status 2.",
        "",
    ]
    for title, used, cls in _roots():
        lines += [f"## {title}", "", f"Read by {used}: `{cls.__module__}.{cls.__name__}`. {summary(cls)}", ""]
        lines += _config_section(cls, cls, "", 3, frozenset({cls}))
    return "\n".join(lines) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices.items())
    return []


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        metavar = action.metavar or action.dest.upper()
        value = f" {metavar if isinstance(metavar, str) else ' '.join(metavar)}" if action.nargs != 0 else ""
        names = ", ".join(f"`{s}{value}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
        help_text = action.help or ""
        if "%(" in help_text:
            help_text = help_text % {**vars(action), "prog": parser.prog}
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{_yaml(default)}`"
        if action.required and action.option_strings:
            shown = "required"
        if action.choices and not isinstance(action.choices, dict):
            help_text += " (one of " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        rows.append(f"| {names} | {_cell(shown)} | {_cell(help_text)} |")
    return rows


def _command_section(words: str, parser: argparse.ArgumentParser) -> list[str]:
    level = "#" * min(words.count(" ") + 2, 6)
    lines = [f"{level} `{words}`", ""]
    if parser.description:
        lines += [parser.description, ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = _option_rows(parser)
    if rows:
        lines += ["| argument | default | what |", "|---|---|---|", *rows, ""]
    if parser.epilog:
        lines += ["```bash", *(line.strip() for line in parser.epilog.splitlines()[1:]), "```", ""]
    for name, sub in _subcommands(parser):
        lines += _command_section(f"{words} {name}", sub)
    return lines


def cli_reference() -> str:
    """The page of every command, generated from ``blocknas``'s argparse parser."""
    from blocknas.search.cli import build_parser

    lines = [
        "# Command line",
        "",
        "Every `blocknas` command and flag, generated from its argparse parser (`docs/gen_reference.py`);",
        "`blocknas <command> --help` says the same. Bad input prints one paragraph and exits with status 2.",
        "",
    ]
    return "\n".join(lines + _command_section("blocknas", build_parser())) + "\n"


def _writer(stem: str) -> str | None:
    """The benchmark script that writes ``results/<stem>.md``: ``multifidelity_groundtruth`` → ``multifidelity``."""
    scripts = [p.stem for p in RESULTS.parent.glob("*.py") if stem == p.stem or stem.startswith(f"{p.stem}_")]
    return max(scripts, key=len, default=None)


def benchmark_pages() -> dict[str, str]:
    """``benchmarks/<name>.md`` for every ``benchmarks/results/<name>.md`` (the overview, ``index.md``, is written by hand)."""
    pages: dict[str, str] = {}
    for path in sorted(RESULTS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        if not text.startswith("# "):
            text = f"# {path.stem}\n\n{text}"
        script = _writer(path.stem)
        wrote = f", as `benchmarks/{script}.py` wrote it" if script else ""
        note = f"\n\n*Rendered from `benchmarks/results/{path.name}`{wrote}.*\n"
        pages[f"benchmarks/{path.stem}.md"] = text.rstrip() + note
    return pages


def all_pages() -> dict[str, str]:
    """Docs-relative path → Markdown of every generated page."""
    return {"reference/config.md": config_reference(), "reference/cli.md": cli_reference(), **benchmark_pages()}


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "site-generated")
    for rel, text in all_pages().items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text, encoding="utf-8")
        print(out / rel)
    for key in undocumented_keys():
        print("undocumented:", key, file=sys.stderr)
