"""Turn anything that names an architecture into an :class:`ArchConfig`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

from .arch import ArchConfig
from .arch_refs import MLFLOW_PREFIX, arch_from_discovered, arch_from_mlflow_run, is_discovered_ref
from .named_archs import arch_of, registered_archs
from .schema import ConfigError, excerpt

__all__ = ["ArchLike", "register_arch_resolver", "resolve_arch"]

ArchLike = Union[ArchConfig, Mapping[str, Any], str, Path]
YAML_SUFFIXES = (".yaml", ".yml")  # the only files resolve_arch reads

# Resolvers for string references other than file paths, tried in order, e.g. "runs:/<id>".
_RESOLVERS: list[tuple[str, Callable[[str], ArchConfig]]] = [(MLFLOW_PREFIX, arch_from_mlflow_run)]


def register_arch_resolver(prefix: str, resolver: Callable[[str], ArchConfig]) -> None:
    """Let :func:`resolve_arch` understand strings starting with ``prefix``."""
    _RESOLVERS[:] = [(p, r) for p, r in _RESOLVERS if p != prefix]
    _RESOLVERS.append((prefix, resolver))


def resolve_arch(arch: ArchLike) -> ArchConfig:
    """An ArchConfig from an ArchConfig, a mapping, a YAML path, or a registered reference.

    String references, tried in this order: a prefix added with :func:`register_arch_resolver`
    (built in: ``runs:/<run_id>``, an MLflow run's ``arch.yaml``), an existing ``.yaml`` or
    ``.yml`` path (another file is refused unread), a registered timm model name built from an ArchConfig, and ``<study>/<name>``,
    a config exported under ``configs/discovered`` (see :mod:`blocknas.blocks.arch_refs`).
    """
    if isinstance(arch, ArchConfig):
        return arch
    if isinstance(arch, Mapping):
        return ArchConfig.from_dict(arch)
    if isinstance(arch, (str, Path)):
        text = str(arch)
        for prefix, resolver in _RESOLVERS:
            if text.startswith(prefix):
                return resolver(text)
        is_file = Path(text).is_file()
        if is_file and Path(text).suffix.lower() in YAML_SUFFIXES:
            return ArchConfig.from_yaml(text)
        if text in registered_archs():
            return arch_of(text)
        if is_discovered_ref(text):
            return arch_from_discovered(text)
        # never read a file that is not YAML: its content would end up in the error
        why = "a file, but not .yaml or .yml" if is_file else "no such file, registered name or reference"
        raise ConfigError(
            f"cannot resolve architecture {excerpt(text, 300)}: {why}; arch= takes an ArchConfig, a mapping, a "
            ".yaml/.yml file, a registered blocknet model name, <study>/<name> (an exported config) or "
            f"a string starting with {' or '.join(p for p, _ in _RESOLVERS) or 'a registered prefix'}"
        )
    raise TypeError(f"arch must be an ArchConfig, mapping, path or reference string, got {type(arch).__name__}")
