"""``blocknas --help``: every flag of every (sub-)subcommand says what it is for, and every subcommand's
help ends with examples that the real parser accepts, so they cannot rot."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocknas.search.cli import build_parser
from tests.conftest import REPO_ROOT


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse._SubParsersAction]:
    return (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _walk(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """``(command words, parser)`` of the top parser and every subcommand under it, depth first."""
    yield words, parser
    for action in _subparsers(parser):
        for name, child in action.choices.items():
            yield from _walk(child, (*words, name))


def _leaves() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The subcommands a user runs (``search``, ``latency calibrate``, ...): those without subcommands of their own."""
    return [(words, p) for words, p in _walk(build_parser()) if words and not any(_subparsers(p))]


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    """The command lines of a parser's ``examples:`` epilog."""
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:\n"), f"{parser.prog}: the epilog does not start with 'examples:'"
    return [line.strip() for line in epilog.splitlines()[1:] if line.strip()]


def test_every_argument_of_every_subcommand_has_help() -> None:
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for _, parser in _walk(build_parser())
        for action in parser._actions
        if not action.help
    ]
    missing += [
        f"{parser.prog} {choice.dest}"
        for _, parser in _walk(build_parser())
        for action in _subparsers(parser)
        for choice in action._choices_actions
        if not choice.help
    ]
    assert not missing, f"arguments without help: {missing}"


@pytest.mark.parametrize(("words", "parser"), _leaves(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_subcommands_help_ends_with_examples_that_parse(
    words: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    examples = _examples(parser)
    assert 1 <= len(examples) <= 3, f"{parser.prog}: {len(examples)} examples; give 1 to 3"
    help_text = parser.format_help()
    assert help_text.rstrip().endswith(examples[-1]), f"{parser.prog} --help does not end with its examples"
    assert all(line in help_text for line in examples), "an example line was rewrapped"
    top = build_parser()
    for line in examples:
        argv = shlex.split(line)
        assert argv[0] == "blocknas" and tuple(argv[1 : 1 + len(words)]) == words, f"{line!r} is not {parser.prog}"
        try:
            args = top.parse_args(argv[1:])
        except SystemExit as exc:  # argparse's way of refusing
            pytest.fail(f"{line!r} does not parse (exit {exc.code})")
        assert args.command == words[0]
        for flag in ("config", "space", "arch"):  # a file an example names is in the repository
            value = getattr(args, flag, None)
            if isinstance(value, str) and value.startswith("configs/") and "$" not in value:
                assert (REPO_ROOT / value).is_file(), f"{line!r}: no {value} in the repository"


def test_the_top_help_shows_examples_too() -> None:
    parser = build_parser()
    for line in _examples(parser):
        parser.parse_args(shlex.split(line)[1:])
    assert Path(parser.prog).name == "blocknas" and "examples:" in parser.format_help()
