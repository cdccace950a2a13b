"""The pieces of an :class:`~blocknas.blocks.arch.ArchConfig`: stem, stage and head configs, and one resolved block.

They live apart from ``ArchConfig`` so that the layer builders (:mod:`blocknas.blocks.layers`)
and the cost counting can use them while ``ArchConfig`` uses both.
"""

from __future__ import annotations

from dataclasses import dataclass

from .cost import CostKnobs, out_size
from .registry import UnknownBlockError, get_block
from .schema import ConfigError

__all__ = ["ACT_LAYERS", "NORM_LAYERS", "BlockSpec", "HeadConfig", "StageConfig", "StemConfig", "check_positive"]

ACT_LAYERS = ("relu", "relu6", "silu", "swish", "hard_swish", "gelu", "leaky_relu", "mish", "elu")
NORM_LAYERS = ("batchnorm2d", "layernorm2d")


def _check_kernel(kernel_size: int, key: str) -> None:
    allowed = "kernel sizes must be odd integers >= 1 (1, 3, 5, 7, ...)"
    if kernel_size < 1:
        raise ConfigError(f"{kernel_size} is < 1; {allowed}", path=key)
    if kernel_size % 2 == 0:
        raise ConfigError(f"{kernel_size} is not odd; {allowed}", path=key)


def _check_stride(stride: int, key: str) -> None:
    if stride not in (1, 2):
        raise ConfigError(f"{stride} is not allowed; stride must be 1 or 2", path=key)


def check_positive(value: float, key: str) -> None:
    """Raise a :class:`ConfigError` at ``key`` unless ``value > 0``."""
    if value <= 0:
        raise ConfigError(f"{value} must be > 0", path=key)


@dataclass(frozen=True)
class StemConfig:
    """The first conv → norm → act, from ``in_chans`` to ``out_chs``."""

    out_chs: int = 16
    kernel_size: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        check_positive(self.out_chs, "out_chs")
        _check_kernel(self.kernel_size, "kernel_size")
        _check_stride(self.stride, "stride")


@dataclass(frozen=True)
class StageConfig:
    """``depth`` blocks of one type; the first block applies ``stride``, the rest stride 1."""

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
        check_positive(self.out_chs, "out_chs")
        if self.depth < 1:
            raise ConfigError(f"{self.depth} must be >= 1", path="depth")
        _check_stride(self.stride, "stride")
        _check_kernel(self.kernel_size, "kernel_size")
        check_positive(self.expand_ratio, "expand_ratio")
        if not 0 <= self.se_ratio < 1:
            raise ConfigError(f"{self.se_ratio} must be in [0, 1); 0 disables squeeze-excite", path="se_ratio")


@dataclass(frozen=True)
class HeadConfig:
    """Optional 1×1 conv to ``num_features`` (0: none, use the last stage's width), then the classifier."""

    num_features: int = 0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.num_features < 0:
            raise ConfigError(f"{self.num_features} must be >= 0 (0 means no head conv)", path="num_features")
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
