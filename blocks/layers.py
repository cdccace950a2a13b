"""The builders of a network's layers: stem, one block, head.

:class:`~blocknas.blocks.blocknet.BlockNet`, the meta-device cost count of
:meth:`~blocknas.blocks.arch.ArchConfig.cost` and the per-block latency table all build
their layers here, so none of them can build a layer the others do not.
"""

from __future__ import annotations

from typing import Any

from timm.layers import ClassifierHead, ConvNormAct
from torch import nn

from .parts import BlockSpec, HeadConfig, StemConfig
from .registry import OPTIONAL_BLOCK_KEYWORDS, accepted_options, get_block
from .schema import ConfigError

__all__ = ["build_block", "build_head", "build_stem"]


def build_stem(in_chans: int, stem: StemConfig, *, act_layer: str, norm_layer: str) -> ConvNormAct:
    """The first conv → norm → act, from ``in_chans`` to ``stem.out_chs``."""
    return ConvNormAct(
        in_chans, stem.out_chs, stem.kernel_size, stride=stem.stride, norm_layer=norm_layer, act_layer=act_layer
    )


def _options(name: str, block_cls: type[nn.Module], stage: int, **values: Any) -> dict[str, Any]:
    """The optional keywords (``mid_norm_act``, ``skip``) to pass: those the block takes.

    A block without one of them can only build at its default; asking for another value is
    an error naming the stage rather than a silently different network.
    """
    accepted = accepted_options(block_cls)
    for key, value in values.items():
        if key not in accepted and value != OPTIONAL_BLOCK_KEYWORDS[key]:
            raise ConfigError(
                f"block {name!r} ({block_cls.__qualname__}) takes no {key!r} keyword, so only the default "
                f"{OPTIONAL_BLOCK_KEYWORDS[key]!r} is possible; got {value!r}",
                path=f"stages[{stage}].{key}",
            )
    return {key: value for key, value in values.items() if key in accepted}


def build_block(spec: BlockSpec, act_layer: str, norm_layer: str, *, drop_path_rate: float = 0.0) -> nn.Module:
    """One block of a network, built from its spec with the uniform block signature."""
    block_cls = get_block(spec.block)
    k = spec.knobs
    return block_cls(
        spec.in_chs,
        spec.out_chs,
        stride=k.stride,
        kernel_size=k.kernel_size,
        expand_ratio=k.expand_ratio,
        se_ratio=k.se_ratio,
        act_layer=act_layer,
        norm_layer=norm_layer,
        drop_path_rate=drop_path_rate,
        **_options(spec.block, block_cls, spec.stage, mid_norm_act=k.mid_norm_act, skip=spec.skip),
    )


def build_head(
    in_chs: int,
    head: HeadConfig,
    num_classes: int,
    *,
    act_layer: str,
    norm_layer: str,
    global_pool: str = "avg",
) -> tuple[nn.Module, ClassifierHead]:
    """The optional 1×1 head conv (``nn.Identity`` when ``head.num_features`` is 0) and the classifier.

    Args:
        in_chs: Channels out of the last stage.
        head: Head conv width and dropout before the classifier.
        num_classes: Classifier outputs (0: none, the pooled features are returned).
        act_layer: Activation of the head conv.
        norm_layer: Norm of the head conv.
        global_pool: Pooling type understood by ``timm.layers.ClassifierHead``.

    Returns:
        ``(conv_head, classifier)``, applied in that order.
    """
    conv_head: nn.Module = (
        ConvNormAct(in_chs, head.num_features, 1, norm_layer=norm_layer, act_layer=act_layer)
        if head.num_features
        else nn.Identity()
    )
    num_features = head.num_features or in_chs
    return conv_head, ClassifierHead(num_features, num_classes, pool_type=global_pool, drop_rate=head.drop_rate)
