"""Name → class registry for convolution blocks.

Every registered block shares one constructor signature (see :mod:`blocknas.blocks.conv_blocks`),
so a search space can put any block in any slot.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "OPTIONAL_BLOCK_KEYWORDS",
    "UnknownBlockError",
    "accepted_options",
    "get_block",
    "list_blocks",
    "register_block",
]

_BLOCKS: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type[nn.Module])

# The keywords every block takes (DESIGN.md's contract), with their documented defaults.
_BLOCK_KEYWORDS: dict[str, Any] = {
    "stride": 1,
    "kernel_size": 3,
    "expand_ratio": 1.0,
    "se_ratio": 0.0,
    "act_layer": "relu",
    "norm_layer": "batchnorm2d",
    "drop_path_rate": 0.0,
}
# Keywords a block may also take (the built-in ones do); BlockNet passes them only to blocks that do.
OPTIONAL_BLOCK_KEYWORDS: dict[str, Any] = {"mid_norm_act": True, "skip": None}
_BLOCK_SIGNATURE = "(in_chs, out_chs, *, " + ", ".join(f"{k}={v!r}" for k, v in _BLOCK_KEYWORDS.items()) + ")"


class UnknownBlockError(KeyError):
    """Raised when a block name is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


def register_block(name: str, *, override: bool = False) -> Callable[[T], T]:
    """Register a block class under ``name``.

    Args:
        name: The name used in architecture configs and search spaces.
        override: Replace an existing registration instead of raising.

    Returns:
        A class decorator that returns the class unchanged.

    Raises:
        TypeError: The class's constructor cannot take the uniform block signature, which
            every network build passes in full; checked here so the error names the block
            instead of surfacing later inside ``timm.create_model``.
    """

    def decorator(cls: T) -> T:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"block name must be an identifier, got {name!r}")
        _check_signature(name, cls)
        if name in _BLOCKS and not override and _BLOCKS[name] is not cls:
            raise ValueError(
                f"block {name!r} is already registered to {_BLOCKS[name].__qualname__}; "
                "pass register_block(name, override=True) to replace it"
            )
        _BLOCKS[name] = cls
        return cls

    return decorator


def _check_signature(name: str, cls: type[nn.Module]) -> None:
    """Raise ``TypeError`` unless ``cls(in_chs, out_chs, **every block keyword)`` binds."""
    where = f"block {name!r} ({cls.__module__}.{cls.__qualname__})"
    expected = (
        f"every block takes {_BLOCK_SIGNATURE}: BlockNet passes all of these keywords, "
        "and a block may ignore the ones it does not use (optionally also "
        + ", ".join(f"{k}={v!r}" for k, v in OPTIONAL_BLOCK_KEYWORDS.items())
        + ")"
    )
    if cls.__init__ is nn.Module.__init__:
        raise TypeError(f"{where} defines no __init__; {expected}")
    signature = inspect.signature(cls)
    params = signature.parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        missing = [k for k in _BLOCK_KEYWORDS if k not in named]
        if missing:
            raise TypeError(f"{where}: __init__{signature} lacks the keyword(s) {', '.join(missing)}; {expected}")
    try:
        signature.bind(1, 1, **_BLOCK_KEYWORDS)
    except TypeError as exc:
        raise TypeError(f"{where}: __init__{signature} cannot be called as a block ({exc}); {expected}") from None


def accepted_options(cls: type[nn.Module]) -> frozenset[str]:
    """Which of :data:`OPTIONAL_BLOCK_KEYWORDS` the block class's constructor takes."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset(OPTIONAL_BLOCK_KEYWORDS)
    return frozenset(p.name for p in params if p.name in OPTIONAL_BLOCK_KEYWORDS)


def get_block(name: str) -> type[nn.Module]:
    """Return the block class registered under ``name``."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise UnknownBlockError(f"unknown block {name!r}; registered blocks: {', '.join(list_blocks())}") from None


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    return sorted(_BLOCKS)
