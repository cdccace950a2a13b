"""Parameters and MACs of a whole :class:`ArchConfig` without building its weights."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .arch import ArchConfig, BlockSpec
from .conv_blocks import ConvBlock
from .cost import Cost, conv_cost, norm_params
from .registry import get_block

__all__ = ["arch_cost", "block_cost", "measured_cost"]


def block_cost(spec: BlockSpec) -> Cost | None:
    """Analytic cost of one block, or ``None`` for a user block without a formula."""
    cls = get_block(spec.block)
    if not issubclass(cls, ConvBlock):
        return None
    try:
        return cls.cost(spec.in_chs, spec.out_chs, spec.in_hw, spec.knobs)
    except NotImplementedError:
        return None


def stem_cost(arch: ArchConfig) -> Cost:
    return conv_cost(arch.in_chans, arch.stem.out_chs, arch.stem.kernel_size, arch.stem_hw) + norm_params(
        arch.stem.out_chs
    )


def head_cost(arch: ArchConfig) -> Cost:
    """Optional 1×1 head conv plus the linear classifier."""
    cost = Cost()
    if arch.head.num_features:
        last_hw = arch.block_specs()[-1].out_hw
        cost += conv_cost(arch.stages[-1].out_chs, arch.head.num_features, 1, last_hw) + norm_params(
            arch.head.num_features
        )
    if arch.num_classes:
        cost += Cost(arch.num_features * arch.num_classes + arch.num_classes, arch.num_features * arch.num_classes)
    return cost


def arch_cost(arch: ArchConfig) -> Cost:
    """Analytic when every block has a cost formula; otherwise counted on the meta device."""
    total = stem_cost(arch) + head_cost(arch)
    for spec in arch.block_specs():
        cost = block_cost(spec)
        if cost is None:
            return measured_cost(arch)
        total += cost
    return total


def measured_cost(arch: ArchConfig) -> Cost:
    """Build the network on the meta device and count parameters and conv/linear MACs."""
    from .blocknet import BlockNet

    with torch.device("meta"):
        model = BlockNet(arch).eval()
        x = torch.empty(1, arch.in_chans, *arch.input_size)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
    return Cost(sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2)
