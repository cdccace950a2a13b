"""Parameters and MACs of a network's parts, analytic or counted on the meta device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .conv_blocks import ConvBlock
from .cost import Cost, conv_cost, norm_params
from .parts import BlockSpec, HeadConfig, StemConfig
from .registry import get_block

__all__ = ["block_cost", "head_cost", "meta_cost", "stem_cost"]


def block_cost(spec: BlockSpec) -> Cost | None:
    """Analytic cost of one block, or ``None`` for a user block without a formula."""
    cls = get_block(spec.block)
    if not issubclass(cls, ConvBlock):
        return None
    try:
        return cls.cost(spec.in_chs, spec.out_chs, spec.in_hw, spec.knobs)
    except NotImplementedError:
        return None


def stem_cost(in_chans: int, stem: StemConfig, out_hw: tuple[int, int]) -> Cost:
    """The stem conv and its norm, with ``out_hw`` its output size."""
    return conv_cost(in_chans, stem.out_chs, stem.kernel_size, out_hw) + norm_params(stem.out_chs)


def head_cost(in_chs: int, in_hw: tuple[int, int], head: HeadConfig, num_classes: int) -> Cost:
    """Optional 1×1 head conv plus the linear classifier."""
    cost = Cost()
    if head.num_features:
        cost += conv_cost(in_chs, head.num_features, 1, in_hw) + norm_params(head.num_features)
    num_features = head.num_features or in_chs
    if num_classes:
        cost += Cost(num_features * num_classes + num_classes, num_features * num_classes)
    return cost


def meta_cost(build: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> Cost:
    """Build a module on the meta device and count its parameters and conv/linear MACs on one input."""
    with torch.device("meta"):
        model = build().eval()
        x = torch.empty(1, *input_shape)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    return Cost(sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2)
