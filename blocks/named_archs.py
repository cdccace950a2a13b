"""The architectures behind named blocknet timm models, by name.

Filled by :func:`blocknas.blocks.timm_models.register_arch` (presets included) and read by
:func:`blocknas.blocks.resolve.resolve_arch`, which lets ``arch="blocknet_mobile"`` name one.
"""

from __future__ import annotations

from .arch import ArchConfig

__all__ = ["add_named_arch", "arch_of", "registered_archs"]

_ARCHS: dict[str, ArchConfig] = {}


def add_named_arch(name: str, arch: ArchConfig) -> None:
    """Record ``arch`` under ``name``, replacing what was there."""
    _ARCHS[name] = arch


def arch_of(name: str) -> ArchConfig:
    """The architecture behind a model registered with :func:`~blocknas.blocks.register_arch` (or a preset)."""
    try:
        return _ARCHS[name]
    except KeyError:
        raise KeyError(
            f"{name!r} is not a registered blocknet architecture; known: {', '.join(sorted(_ARCHS))}"
        ) from None


def registered_archs() -> list[str]:
    """Names of all models registered with :func:`~blocknas.blocks.register_arch`, presets included."""
    return sorted(_ARCHS)
