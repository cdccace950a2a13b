"""The four built-in blocks, all with one constructor signature.

Shared knobs (every block accepts all of them, so any block fits any slot):

* ``stride`` 1 keeps H×W, 2 gives ``ceil(H / 2)`` (symmetric 'same' padding, odd kernels).
* ``kernel_size`` of the spatial (k×k or depthwise) conv.
* ``expand_ratio`` hidden width multiplier; only ``inverted_residual`` uses it.
* ``se_ratio`` squeeze-excite reduction (0 disables it); SE gates the output of the
  spatial conv, with ``rd = make_divisible(C_se · se_ratio, 8)`` hidden channels.
* ``mid_norm_act`` BN + activation between the two convs of ``separable`` and
  ``reversed``; ``standard`` and ``inverted_residual`` ignore it.
* ``skip`` identity shortcut when stride is 1 and in == out; ``None`` means the block's
  default (on for ``inverted_residual``, off for the rest).
* ``act_layer``, ``norm_layer`` names understood by ``timm.layers``; ``drop_path_rate``
  stochastic depth on the residual branch (only when there is a shortcut).

Cost formulas use C_in, C_out, k, input H×W and output H'×W' = ceil(H/s)×ceil(W/s);
BN contributes 2·C parameters and no MACs (see :mod:`blocknas.blocks.cost`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from timm.layers import DropPath, SqueezeExcite, create_conv2d, get_norm_act_layer, make_divisible
from torch import nn

from .cost import Cost, CostKnobs, conv_cost, norm_params, out_size, se_channels, se_cost
from .registry import register_block

__all__ = ["ConvBlock", "InvertedResidual", "ReversedSeparableConv", "SeparableConv", "StandardConv"]


class ConvBlock(nn.Module):
    """Base class of the built-in blocks: shortcut handling and the cost contract.

    Subclasses build their layers in ``__init__`` with the uniform signature and
    implement :meth:`cost`; user blocks need only the signature (``cost`` is optional).
    """

    default_skip: ClassVar[bool] = False

    def _init_shortcut(self, in_chs: int, out_chs: int, stride: int, skip: bool | None, drop_path_rate: float) -> None:
        wanted = self.default_skip if skip is None else skip
        self.has_skip = bool(wanted) and stride == 1 and in_chs == out_chs
        self.drop_path: nn.Module = DropPath(drop_path_rate) if self.has_skip and drop_path_rate > 0 else nn.Identity()

    def _add_shortcut(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.drop_path(x) + shortcut if self.has_skip else x

    @staticmethod
    def _se(chs: int, se_ratio: float) -> nn.Module:
        return SqueezeExcite(chs, rd_channels=se_channels(chs, se_ratio)) if se_ratio > 0 else nn.Identity()

    @classmethod
    def cost(cls, in_chs: int, out_chs: int, in_hw: tuple[int, int], knobs: CostKnobs) -> Cost:
        """Analytic parameter count and MACs for this block at input size ``in_hw``."""
        raise NotImplementedError


@register_block("standard")
class StandardConv(ConvBlock):
    """k×k conv → BN → act [→ SE]. The plain baseline; ignores ``expand_ratio`` and ``mid_norm_act``.

    params = k²·C_in·C_out + 2·C_out (+ SE(C_out));
    MACs = k²·C_in·C_out·H'·W' (+ 2·C_out·rd).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        mid_norm_act: bool = True,
        skip: bool | None = None,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = get_norm_act_layer(norm_layer, act_layer)
        self.conv = create_conv2d(in_chs, out_chs, kernel_size, stride=stride)
        self.bn = norm_act(out_chs, inplace=True)
        self.se = self._se(out_chs, se_ratio)
        self._init_shortcut(in_chs, out_chs, stride, skip, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._add_shortcut(self.se(self.bn(self.conv(x))), x)

    @classmethod
    def cost(cls, in_chs: int, out_chs: int, in_hw: tuple[int, int], knobs: CostKnobs) -> Cost:
        hw = out_size(in_hw, knobs.stride)
        return (
            conv_cost(in_chs, out_chs, knobs.kernel_size, hw) + norm_params(out_chs) + se_cost(out_chs, knobs.se_ratio)
        )


@register_block("separable")
class SeparableConv(ConvBlock):
    """k×k depthwise → BN → act [→ SE] → 1×1 pointwise → BN → act (MobileNetV1 order).

    ``mid_norm_act=False`` drops the BN + act after the depthwise conv: the seed's exact
    order (depthwise, pointwise, BN, ReLU). Ignores ``expand_ratio``.

    params = k²·C_in + [2·C_in] + C_in·C_out + 2·C_out (+ SE(C_in));
    MACs = k²·C_in·H'·W' + C_in·C_out·H'·W' (+ 2·C_in·rd).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        mid_norm_act: bool = True,
        skip: bool | None = None,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = get_norm_act_layer(norm_layer, act_layer)
        self.conv_dw = create_conv2d(in_chs, in_chs, kernel_size, stride=stride, depthwise=True)
        self.bn1 = norm_act(in_chs, inplace=True) if mid_norm_act else nn.Identity()
        self.se = self._se(in_chs, se_ratio)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1)
        self.bn2 = norm_act(out_chs, inplace=True)
        self._init_shortcut(in_chs, out_chs, stride, skip, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.bn1(self.conv_dw(x)))
        return self._add_shortcut(self.bn2(self.conv_pw(out)), x)

    @classmethod
    def cost(cls, in_chs: int, out_chs: int, in_hw: tuple[int, int], knobs: CostKnobs) -> Cost:
        hw = out_size(in_hw, knobs.stride)
        cost = conv_cost(in_chs, in_chs, knobs.kernel_size, hw, groups=in_chs) + se_cost(in_chs, knobs.se_ratio)
        if knobs.mid_norm_act:
            cost += norm_params(in_chs)
        return cost + conv_cost(in_chs, out_chs, 1, hw) + norm_params(out_chs)


@register_block("reversed")
class ReversedSeparableConv(ConvBlock):
    """1×1 pointwise → BN → act → k×k depthwise → BN → act [→ SE] (pointwise first).

    Xception's "extreme Inception" order, BSConv-U. The pointwise conv runs at the input
    resolution, so at stride 2 it costs more MACs than ``separable``.
    ``mid_norm_act=False`` drops the BN + act after the pointwise conv. Ignores ``expand_ratio``.

    params = C_in·C_out + [2·C_out] + k²·C_out + 2·C_out (+ SE(C_out));
    MACs = C_in·C_out·H·W + k²·C_out·H'·W' (+ 2·C_out·rd).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 1.0,
        se_ratio: float = 0.0,
        mid_norm_act: bool = True,
        skip: bool | None = None,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = get_norm_act_layer(norm_layer, act_layer)
        self.conv_pw = create_conv2d(in_chs, out_chs, 1)
        self.bn1 = norm_act(out_chs, inplace=True) if mid_norm_act else nn.Identity()
        self.conv_dw = create_conv2d(out_chs, out_chs, kernel_size, stride=stride, depthwise=True)
        self.bn2 = norm_act(out_chs, inplace=True)
        self.se = self._se(out_chs, se_ratio)
        self._init_shortcut(in_chs, out_chs, stride, skip, drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        return self._add_shortcut(self.se(self.bn2(self.conv_dw(out))), x)

    @classmethod
    def cost(cls, in_chs: int, out_chs: int, in_hw: tuple[int, int], knobs: CostKnobs) -> Cost:
        hw = out_size(in_hw, knobs.stride)
        cost = conv_cost(in_chs, out_chs, 1, in_hw)
        if knobs.mid_norm_act:
            cost += norm_params(out_chs)
        cost += conv_cost(out_chs, out_chs, knobs.kernel_size, hw, groups=out_chs) + norm_params(out_chs)
        return cost + se_cost(out_chs, knobs.se_ratio)


@register_block("inverted_residual")
class InvertedResidual(ConvBlock):
    """1×1 expand → BN → act → k×k depthwise → BN → act [→ SE] → 1×1 project → BN (MobileNetV2).

    Hidden width ``C_mid = make_divisible(C_in · expand_ratio, 8)``; with ``expand_ratio == 1``
    the expansion conv is omitted and ``C_mid = C_in`` (as in MobileNetV2's first block).
    The projection is linear; the identity shortcut is on by default. Ignores ``mid_norm_act``.

    params = [C_in·C_mid + 2·C_mid] + k²·C_mid + 2·C_mid (+ SE(C_mid)) + C_mid·C_out + 2·C_out;
    MACs = [C_in·C_mid·H·W] + k²·C_mid·H'·W' (+ 2·C_mid·rd) + C_mid·C_out·H'·W'.
    """

    default_skip = True

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        *,
        stride: int = 1,
        kernel_size: int = 3,
        expand_ratio: float = 6.0,
        se_ratio: float = 0.0,
        mid_norm_act: bool = True,
        skip: bool | None = None,
        act_layer: str = "relu",
        norm_layer: str = "batchnorm2d",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        norm_act = get_norm_act_layer(norm_layer, act_layer)
        mid_chs = self.mid_chs(in_chs, expand_ratio)
        expands = expand_ratio != 1
        self.conv_pw = create_conv2d(in_chs, mid_chs, 1) if expands else nn.Identity()
        self.bn1 = norm_act(mid_chs, inplace=True) if expands else nn.Identity()
        self.conv_dw = create_conv2d(mid_chs, mid_chs, kernel_size, stride=stride, depthwise=True)
        self.bn2 = norm_act(mid_chs, inplace=True)
        self.se = self._se(mid_chs, se_ratio)
        self.conv_pwl = create_conv2d(mid_chs, out_chs, 1)
        self.bn3 = norm_act(out_chs, apply_act=False)
        self._init_shortcut(in_chs, out_chs, stride, skip, drop_path_rate)

    @staticmethod
    def mid_chs(in_chs: int, expand_ratio: float) -> int:
        """Hidden width: ``in_chs`` when not expanding, else rounded to a multiple of 8."""
        return in_chs if expand_ratio == 1 else make_divisible(in_chs * expand_ratio, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.se(self.bn2(self.conv_dw(out)))
        return self._add_shortcut(self.bn3(self.conv_pwl(out)), x)

    @classmethod
    def cost(cls, in_chs: int, out_chs: int, in_hw: tuple[int, int], knobs: CostKnobs) -> Cost:
        hw = out_size(in_hw, knobs.stride)
        mid = cls.mid_chs(in_chs, knobs.expand_ratio)
        cost = Cost()
        if knobs.expand_ratio != 1:
            cost += conv_cost(in_chs, mid, 1, in_hw) + norm_params(mid)
        cost += conv_cost(mid, mid, knobs.kernel_size, hw, groups=mid) + norm_params(mid) + se_cost(mid, knobs.se_ratio)
        return cost + conv_cost(mid, out_chs, 1, hw) + norm_params(out_chs)
