"""The pieces of an :class:`~blocknas.blocks.arch.ArchConfig`: stem, stage and head configs, and one resolved block.

They live apart from ``ArchConfig`` so that the layer builders (:mod:`blocknas.blocks.layers`)
and the cost counting can use them while ``ArchConfig`` uses both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cost import CostKnobs, out_size
from .registry import UnknownBlockError, get_block
from .schema import ConfigError, check_range

__all__ = [
    "ACT_LAYERS",
    "MAX_DEPTH",
    "MAX_EXPAND_RATIO",
    "MAX_KERNEL_SIZE",
    "MAX_WIDTH",
    "NORM_LAYERS",
    "BlockSpec",
    "HeadConfig",
    "StageConfig",
    "StemConfig",
]

ACT_LAYERS = ("relu", "relu6", "silu", "swish", "hard_swish", "gelu", "leaky_relu", "mish", "elu")
NORM_LAYERS = ("batchnorm2d", "layernorm2d")

MAX_WIDTH = 16_384
"""Most channels of any stem, stage or head conv (the widest timm models use a few thousand)."""
MAX_DEPTH = 128
"""Most blocks in one stage (ResNet-152's widest stage has 36)."""
MAX_KERNEL_SIZE = 63
"""Largest kernel size (large-kernel ConvNets use up to 51)."""
MAX_EXPAND_RATIO = 16.0
"""Largest inverted-residual expansion (MobileNets use up to 6-8)."""


def _check_kernel(kernel_size: int, key: str) -> None:
    allowed = "kernel sizes must be odd integers >= 1 (1, 3, 5, 7, ...)"
    if kernel_size < 1:
        raise ConfigError(f"{kernel_size} is < 1; {allowed}", path=key)
    check_range(kernel_size, key, 1, MAX_KERNEL_SIZE)
    if kernel_size % 2 == 0:
        raise ConfigError(f"{kernel_size} is not odd; {allowed}", path=key)


def _check_stride(stride: int, key: str) -> None:
    if stride not in (1, 2):
        raise ConfigError(f"{stride} is not allowed; stride must be 1 or 2", path=key)


@dataclass(frozen=True)
class StemConfig:
    """The first conv → norm → act, from ``in_chans`` to ``out_chs``.

    Attributes:
        out_chs: Output channels.
        kernel_size: Kernel size, odd.
        stride: 1 or 2.
    """

    out_chs: int = 16
    kernel_size: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        check_range(self.out_chs, "out_chs", 0, MAX_WIDTH, above=True)
        _check_kernel(self.kernel_size, "kernel_size")
        _check_stride(self.stride, "stride")


@dataclass(frozen=True)
class StageConfig:
    """``depth`` blocks of one type; the first block applies ``stride``, the rest stride 1.

    Attributes:
        block: A registered block's name (``standard``, ``separable``, ``reversed``,
            ``inverted_residual`` or your own).
        out_chs: Output channels of every block of the stage.
        depth: Blocks in the stage.
        stride: The first block's stride, 1 or 2.
        kernel_size: The depthwise (or k×k) kernel size, odd.
        expand_ratio: Expansion of the hidden width (``inverted_residual``; others ignore it).
        se_ratio: Squeeze-excite reduction ratio, in [0, 1); 0: no squeeze-excite.
        mid_norm_act: Norm and activation between the block's convs (blocks that have the choice).
        skip: Identity shortcut where stride and widths allow; null: the block's default.
    """

    block: str
    out_chs: int
    depth: int = 1
    stride: int = 1
    kernel_size: int = 3
    expand_ratio: float = 1.0
    se_ratio: float = 0.0
    mid_norm_act: bool = True
    skip: bool | None = None

    def __post_init__(self) -> None:
        try:
            get_block(self.block)
        except UnknownBlockError as exc:
            raise ConfigError(str(exc), path="block") from None
        check_range(self.out_chs, "out_chs", 0, MAX_WIDTH, above=True)
        check_range(self.depth, "depth", 1, MAX_DEPTH)
        _check_stride(self.stride, "stride")
        _check_kernel(self.kernel_size, "kernel_size")
        check_range(self.expand_ratio, "expand_ratio", 0, MAX_EXPAND_RATIO, above=True)
        if not 0 <= self.se_ratio < 1:
            raise ConfigError(f"{self.se_ratio} must be in [0, 1); 0 disables squeeze-excite", path="se_ratio")


@dataclass(frozen=True)
class HeadConfig:
    """Optional 1×1 conv to ``num_features`` (0: none, use the last stage's width), then the classifier.

    Attributes:
        num_features: Width of the 1×1 head conv; 0: no head conv.
        drop_rate: Dropout before the classifier.
    """

    num_features: int = 0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        check_range(self.num_features, "num_features", 0, MAX_WIDTH, hint=" (0 means no head conv)")
        if not 0 <= self.drop_rate < 1:
            raise ConfigError(f"{self.drop_rate} must be in [0, 1)", path="drop_rate")


@dataclass(frozen=True)
class BlockSpec:
    """One block of a network, fully resolved: what to build and at which input size."""

    stage: int
    index: int
    block: str
    in_chs: int
    out_chs: int
    in_hw: tuple[int, int]
    knobs: CostKnobs
    skip: bool | None

    @property
    def out_hw(self) -> tuple[int, int]:
        return out_size(self.in_hw, self.knobs.stride)
