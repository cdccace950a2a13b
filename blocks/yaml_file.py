"""Reading a YAML config file: only a regular file of bounded size, strict YAML, bounded aliases.

Every config file blocknas reads (architectures, spaces, studies, ablations, training and
dataset configs) comes through :func:`load_yaml`, so these hold for all of them:

* the path must name a regular file (checked before it is opened, so a FIFO never blocks
  and a device is never read) of at most :data:`MAX_CONFIG_BYTES` bytes, and no more than
  that is ever read;
* a key repeated in one mapping is an error naming the key and both lines;
* aliases may add at most :data:`MAX_ALIAS_VALUES` values to the document ("billion laughs").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .schema import ConfigError, excerpt

__all__ = ["MAX_ALIAS_VALUES", "MAX_CONFIG_BYTES", "load_yaml"]

MAX_CONFIG_BYTES = 1 << 20
"""Largest config file read (1 MiB); a 1,000-stage architecture takes about 170 KB."""

MAX_ALIAS_VALUES = 10_000
"""Most values a file's aliases may add once expanded; values written out count nothing."""


try:  # libyaml's parser where PyYAML has it: 3-4 times faster on a large file, and it bounds nesting itself
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


class _StrictLoader(_SafeLoader):
    """A safe loader that refuses duplicate keys and aliases expanding past :data:`MAX_ALIAS_VALUES`.

    Anchors and aliases stay usable for what people write them for (reusing a stage's block
    list), but a small file cannot expand to a huge value: what the aliases add is counted
    on the composed node graph, each shared node once, before anything is built.
    """

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _alias_values(node) > MAX_ALIAS_VALUES:
            raise ConfigError(
                f"its aliases expand to more than {MAX_ALIAS_VALUES:,} values; write the values out "
                "or reuse fewer of them (YAML aliases are bounded so a small file cannot grow without limit)"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may override, by design
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if first is not None:
                raise ConfigError(
                    f"duplicate key {excerpt(key)} on lines {first} and {line}; a key may appear once in a "
                    "mapping (YAML would silently keep the last)"
                )
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def _alias_values(root: yaml.Node) -> int:
    """Values that aliases add to ``root``: its size with every alias expanded, less the nodes written."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: a deep file cannot exhaust the Python stack here
        node, done = stack.pop()
        if done:
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
        elif id(node) not in sizes:
            sizes[id(node)] = 1  # a recursive alias counts once instead of looping
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)] - len(sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def read_config_bytes(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most :data:`MAX_CONFIG_BYTES` bytes.

    Raises:
        ConfigError: ``path`` is missing, a folder, a FIFO, device or socket, too large, or unreadable.
    """
    try:
        info = os.stat(path)  # before opening: opening a FIFO waits for a writer, a device may act
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError("is a folder; expected a YAML file", source=str(path))
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                "is not a regular file (a FIFO, device or socket); expected a YAML file", source=str(path)
            )
        _check_size(info.st_size, path)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped since the stat
                raise ConfigError("is not a regular file; expected a YAML file", source=str(path))
            data = handle.read(MAX_CONFIG_BYTES + 1)  # /proc-like files report size 0
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as exc:  # permissions, a path through a plain file, a broken mount
        raise ConfigError(f"cannot be read ({exc.strerror or exc}); expected a YAML file", source=str(path)) from None
    _check_size(len(data), path)
    return data


def _check_size(size: int, path: Path) -> None:
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"is {size:,} bytes; a config file may hold at most {MAX_CONFIG_BYTES:,} bytes (1 MiB)",
            source=str(path),
        )


def load_yaml(path: str | Path) -> Any:
    """Read a YAML config file (see the module docstring); every error names the file, and the line where known."""
    path = Path(path)
    try:
        text = read_config_bytes(path).decode()
    except UnicodeDecodeError:
        raise ConfigError("not a text file; expected YAML", source=str(path)) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: plain data only
    except ConfigError as exc:
        raise ConfigError(exc.message, source=str(path)) from None
    except RecursionError:
        raise ConfigError("nested too deeply to parse; expected a YAML config", source=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"YAML syntax error: {line}{problem}", source=str(path)) from None
