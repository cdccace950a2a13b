"""``FileConfig``: loading, overriding and plain export for a frozen config dataclass read from YAML."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from blocknas.blocks import ConfigError, load_yaml, parse
from blocknas.blocks.schema import to_plain

__all__ = ["FileConfig"]

FileConfigT = TypeVar("FileConfigT", bound="FileConfig")


class FileConfig:
    """Mixin for a frozen config dataclass read from a YAML file.

    The dataclass keeps the file it came from in a ``source`` field (not a YAML key), so
    errors found later still name that file. A subclass that reads its mapping specially
    (e.g. merges defaults into a section) overrides :meth:`from_dict`.
    """

    source: str | None

    @classmethod
    def from_dict(cls: type[FileConfigT], data: Any, *, source: str | None = None) -> FileConfigT:
        """Parse and validate plain data; errors name ``source`` and the key path."""
        if isinstance(data, Mapping) and "source" in data:
            raise ConfigError("unknown key 'source'", path="source", source=source)
        return dataclasses.replace(parse(cls, data, source=source), source=source)  # type: ignore[type-var]

    @classmethod
    def load(cls: type[FileConfigT], path: str | Path) -> FileConfigT:
        """Load and validate a YAML file; errors name the file and key path."""
        return cls.from_dict(load_yaml(path), source=str(path))

    def with_overrides(self: FileConfigT, **overrides: Any) -> FileConfigT:
        """A validated copy with the given (non-None) top-level values replaced."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if not changes:
            return self
        return self.from_dict({**self.to_dict(), **changes}, source=self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the ``source`` field left out) that parses back into an equal config."""
        data = to_plain(self)
        data.pop("source", None)
        return dict(data)
