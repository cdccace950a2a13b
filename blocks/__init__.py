"""Block registry, the four built-in blocks, ``ArchConfig`` and the timm-compatible ``BlockNet``.

Importing this package registers the ``blocknet`` timm models.
"""

from __future__ import annotations

from .arch import ArchConfig
from .blocknet import BlockNet
from .conv_blocks import ConvBlock, InvertedResidual, ReversedSeparableConv, SeparableConv, StandardConv
from .cost import Cost, CostKnobs
from .named_archs import arch_of, registered_archs
from .parts import MAX_WIDTH, BlockSpec, HeadConfig, StageConfig, StemConfig
from .registry import UnknownBlockError, get_block, list_blocks, register_block
from .resolve import resolve_arch
from .schema import ConfigError, parse
from .timm_models import DEFAULT_ARCH, register_arch, register_arch_dir
from .yaml_file import load_yaml

__all__ = [
    "DEFAULT_ARCH",
    "MAX_WIDTH",
    "ArchConfig",
    "BlockNet",
    "BlockSpec",
    "ConfigError",
    "ConvBlock",
    "Cost",
    "CostKnobs",
    "HeadConfig",
    "InvertedResidual",
    "ReversedSeparableConv",
    "SeparableConv",
    "StageConfig",
    "StandardConv",
    "StemConfig",
    "UnknownBlockError",
    "arch_of",
    "get_block",
    "list_blocks",
    "load_yaml",
    "parse",
    "register_arch",
    "register_arch_dir",
    "register_block",
    "registered_archs",
    "resolve_arch",
]
