"""Block registry, the four built-in blocks, ``ArchConfig`` and the timm-compatible ``BlockNet``.

Importing this package registers the ``blocknet`` timm models.
"""

from __future__ import annotations

from .arch import MAX_CLASSES, MAX_IN_CHANS, MAX_INPUT_SIDE, ArchConfig
from .blocknet import BlockNet
from .conv_blocks import ConvBlock, InvertedResidual, ReversedSeparableConv, SeparableConv, StandardConv
from .cost import Cost, CostKnobs
from .layers import build_block, build_head, build_stem
from .named_archs import arch_of, registered_archs
from .parts import (
    ACT_LAYERS,
    MAX_DEPTH,
    MAX_EXPAND_RATIO,
    MAX_KERNEL_SIZE,
    MAX_WIDTH,
    NORM_LAYERS,
    BlockSpec,
    HeadConfig,
    StageConfig,
    StemConfig,
)
from .registry import UnknownBlockError, get_block, list_blocks, register_block
from .resolve import ArchLike, register_arch_resolver, resolve_arch
from .schema import ConfigError, check_range, excerpt, flatten, parse, to_plain
from .timm_models import DEFAULT_ARCH, blocknet, create_blocknet, register_arch, register_arch_dir
from .yaml_file import MAX_ALIAS_VALUES, MAX_CONFIG_BYTES, load_yaml

__all__ = [
    "ACT_LAYERS",
    "DEFAULT_ARCH",
    "MAX_ALIAS_VALUES",
    "MAX_CLASSES",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_EXPAND_RATIO",
    "MAX_INPUT_SIDE",
    "MAX_IN_CHANS",
    "MAX_KERNEL_SIZE",
    "MAX_WIDTH",
    "NORM_LAYERS",
    "ArchConfig",
    "ArchLike",
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
    "blocknet",
    "build_block",
    "build_head",
    "build_stem",
    "check_range",
    "create_blocknet",
    "excerpt",
    "flatten",
    "get_block",
    "list_blocks",
    "load_yaml",
    "parse",
    "register_arch",
    "register_arch_dir",
    "register_arch_resolver",
    "register_block",
    "registered_archs",
    "resolve_arch",
    "to_plain",
]
