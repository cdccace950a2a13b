"""Name → class registry for convolution blocks.

Every registered block shares one constructor signature (see :mod:`blocknas.blocks.conv_blocks`),
so a search space can put any block in any slot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

__all__ = ["UnknownBlockError", "get_block", "list_blocks", "register_block"]

_BLOCKS: dict[str, type[nn.Module]] = {}

T = TypeVar("T", bound=type[nn.Module])


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
    """

    def decorator(cls: T) -> T:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"block name must be an identifier, got {name!r}")
        if name in _BLOCKS and not override and _BLOCKS[name] is not cls:
            raise ValueError(
                f"block {name!r} is already registered to {_BLOCKS[name].__qualname__}; "
                "pass register_block(name, override=True) to replace it"
            )
        _BLOCKS[name] = cls
        return cls

    return decorator


def get_block(name: str) -> type[nn.Module]:
    """Return the block class registered under ``name``."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise UnknownBlockError(f"unknown block {name!r}; registered blocks: {', '.join(list_blocks())}") from None


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    return sorted(_BLOCKS)
