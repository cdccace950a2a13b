"""Typed, path-aware parsing of plain YAML/dict data into frozen dataclasses.

Every config in blocknas (architectures, search spaces, studies, ablations) is a frozen
dataclass parsed by :func:`parse`, so a bad key is reported the same way everywhere:
``configs/x.yaml: stages[1].kernel_size: 4 is not odd``.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

__all__ = ["ConfigError", "check_range", "excerpt", "flatten", "parse", "to_plain"]

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration; names the file (if any), the key path and what is allowed."""

    def __init__(self, message: str, *, path: str = "", source: str | None = None) -> None:
        self.message, self.path, self.source = message, path, source
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.source, self.path) if p)
        return f"{where}: {self.message}" if where else self.message

    def within(self, prefix: str, source: str | None = None) -> ConfigError:
        """The same error seen from an enclosing key ``prefix`` (and file ``source``)."""
        path = _join(prefix, self.path) if prefix else self.path
        return ConfigError(self.message, path=path, source=self.source or source)


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


MAX_CONFIG_INT = 2**53
"""Largest integer any config value may be (its magnitude): what a float, and so JSON, keeps exact."""


def check_range(value: float, key: str, low: float, high: float, *, above: bool = False, hint: str = "") -> None:
    """Raise a :class:`ConfigError` at ``key`` unless ``low <= value <= high`` (``low < value`` if ``above``).

    Every numeric setting has such a documented range, checked before anything is written, so a
    value far outside it (``epochs: 1e21``, a negative seed) is a config error, not a crash mid-study.
    ``hint`` follows the message (e.g. ``" (0: no head conv)"``).
    """
    if not (low < value if above else low <= value) or value > high:
        raise ConfigError(f"{value} must be {'>' if above else '>='} {low:,} and <= {high:,}{hint}", path=key)


def parse(cls: type[T], data: Any, *, source: str | None = None, path: str = "") -> T:
    """Build dataclass ``cls`` from plain ``data``, checking keys, types and values.

    A dataclass may check itself in ``__post_init__``, raising :class:`ConfigError` with a path
    relative to itself; it is re-raised with the full key path.
    """
    try:
        return typing.cast(T, _parse_value(cls, data, path))
    except ConfigError as exc:
        raise ConfigError(exc.message, path=exc.path, source=exc.source or source) from None


def excerpt(value: Any, limit: int = 80, *, quote: bool = True) -> str:
    """``repr(value)`` (``str`` when not ``quote``), cut to ``limit`` characters with "…": how errors show input."""
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(value: Any) -> str:
    return f"{excerpt(value)} ({type(value).__name__})"


def _parse_dataclass(cls: type, data: Any, path: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping, got {_describe(data)}", path=path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {excerpt(unknown[0])}; allowed keys: {', '.join(fields)}",
            path=_join(path, excerpt(unknown[0], quote=False)),
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if name not in data:
            if required:
                raise ConfigError(f"missing required key {name!r}", path=path or "")
            continue
        kwargs[name] = _parse_value(hints[name], data[name], _join(path, name))
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # raised by the dataclass's own __post_init__ checks
        raise exc.within(path) from None


def _parse_value(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return _parse_dataclass(hint, value, path)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _parse_value(option, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(
                f"{_describe(value)} matches none of: {', '.join(_hint_name(o) for o in options)}", path=path
            )
        )
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{excerpt(value)} is not one of {', '.join(map(repr, allowed))}", path=path)
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {_describe(value)}", path=path)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse_value(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"expected a list of {len(args)} items, got {len(value)}", path=path)
        return tuple(_parse_value(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {_describe(value)}", path=path)
        args = typing.get_args(hint) or (str, Any)
        return {k: _parse_value(args[1], v, _join(path, str(k))) for k, v in value.items()}
    return _parse_scalar(hint, value, path)


def _parse_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {_describe(value)}", path=path)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {_describe(value)}", path=path)
        if abs(value) > MAX_CONFIG_INT:
            raise ConfigError(f"{excerpt(value)} is out of range: config integers are at most 2**53", path=path)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {_describe(value)}", path=path)
        if not math.isfinite(value):
            raise ConfigError(f"{value} is not a finite number; give a number (or leave the key out)", path=path)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {_describe(value)}", path=path)
        return value
    raise TypeError(f"unsupported config type {hint!r} at {path}")


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return ", ".join(map(repr, typing.get_args(hint)))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def to_plain(obj: Any) -> Any:
    """Dataclasses and tuples → dicts and lists (YAML/JSON friendly), recursively."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def flatten(plain: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested plain data → ``{"key.path": value}`` (e.g. MLflow params).

    Mappings and lists of mappings are walked (list items by index: ``stages.0.block``);
    any other value, lists of scalars included, is kept as it is.
    """
    flat: dict[str, Any] = {}
    for key, value in plain.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{name}.{i}"))
        else:
            flat[name] = value
    return flat
