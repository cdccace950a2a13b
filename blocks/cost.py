"""Analytic cost arithmetic shared by blocks and networks.

MACs count multiply-accumulates of convolutions and linear layers only, which is what
``torch.utils.flop_counter`` counts (it reports FLOPs = 2 × MACs); normalisation,
activations, pooling and element-wise ops are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from timm.layers import make_divisible

__all__ = ["Cost", "CostKnobs", "conv_cost", "norm_params", "out_size", "se_channels", "se_cost"]


@dataclass(frozen=True)
class Cost:
    """Parameter count and multiply-accumulates of a module at a given input size."""

    params: int = 0
    macs: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)


def out_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Spatial size after a 'same'-padded conv: ``ceil(H / stride)``."""
    return math.ceil(size[0] / stride), math.ceil(size[1] / stride)


def conv_cost(
    in_chs: int, out_chs: int, kernel_size: int, out_hw: tuple[int, int], *, groups: int = 1, bias: bool = False
) -> Cost:
    """Cost of a k×k conv producing an ``out_hw`` map."""
    weights = kernel_size * kernel_size * (in_chs // groups) * out_chs
    return Cost(weights + (out_chs if bias else 0), weights * out_hw[0] * out_hw[1])


def norm_params(chs: int) -> Cost:
    """An affine normalisation layer: weight and bias per channel, no MACs counted."""
    return Cost(2 * chs, 0)


def se_channels(chs: int, se_ratio: float) -> int:
    """Reduced width of a squeeze-excite module gating ``chs`` channels."""
    return make_divisible(chs * se_ratio, 8)


def se_cost(chs: int, se_ratio: float) -> Cost:
    """Squeeze-excite on ``chs`` channels: two biased 1×1 convs on a 1×1 map."""
    if se_ratio <= 0:
        return Cost()
    rd = se_channels(chs, se_ratio)
    return conv_cost(chs, rd, 1, (1, 1), bias=True) + conv_cost(rd, chs, 1, (1, 1), bias=True)


@dataclass(frozen=True)
class CostKnobs:
    """The block knobs that change a block's cost (act/norm/drop-path do not)."""

    stride: int = 1
    kernel_size: int = 3
    expand_ratio: float = 1.0
    se_ratio: float = 0.0
    mid_norm_act: bool = True
