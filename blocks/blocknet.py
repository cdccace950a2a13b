"""``BlockNet``: a timm-compatible classification network assembled from an :class:`ArchConfig`."""

from __future__ import annotations

from typing import Any

import torch
from timm.models import checkpoint_seq
from torch import nn

from .arch import ArchConfig
from .layers import build_block, build_head, build_stem

__all__ = ["BlockNet"]


def _take_indices(num_stages: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """Stage indices to return (an int n means the last n) and the highest one."""
    if indices is None:
        take = list(range(num_stages))
    elif isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices} must be in 1..{num_stages}")
        take = list(range(num_stages - indices, num_stages))
    else:
        take = [num_stages + i if i < 0 else i for i in indices]
        if any(not 0 <= i < num_stages for i in take):
            raise ValueError(f"indices {list(indices)} out of range for {num_stages} stages")
    return take, max(take)


class BlockNet(nn.Module):
    """Stem → stages of registered blocks → optional 1×1 head conv → pool → classifier.

    Args:
        arch: The network description.
        in_chans: Input channels; overrides ``arch.in_chans``.
        num_classes: Classifier outputs (0: none); overrides ``arch.num_classes``.
        drop_rate: Dropout before the classifier; overrides ``arch.head.drop_rate``.
        drop_path_rate: Stochastic depth, rising linearly to this rate over the blocks.
        global_pool: Pooling type understood by ``timm.layers.ClassifierHead``.
    """

    def __init__(
        self,
        arch: ArchConfig,
        *,
        in_chans: int | None = None,
        num_classes: int | None = None,
        drop_rate: float | None = None,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        changes: dict[str, Any] = {
            k: v for k, v in (("in_chans", in_chans), ("num_classes", num_classes)) if v is not None
        }
        if drop_rate is not None:
            changes["head"] = {"num_features": arch.head.num_features, "drop_rate": drop_rate}
        self.arch = arch = arch.replace(**changes) if changes else arch
        self.num_classes = arch.num_classes
        self.in_chans = arch.in_chans
        self.drop_rate = arch.head.drop_rate
        self.grad_checkpointing = False

        act, norm = arch.act_layer, arch.norm_layer
        self.stem = build_stem(arch.in_chans, arch.stem, act_layer=act, norm_layer=norm)
        specs = arch.block_specs()
        rates = [drop_path_rate * i / max(len(specs) - 1, 1) for i in range(len(specs))]
        stages: list[list[nn.Module]] = [[] for _ in arch.stages]
        for spec, rate in zip(specs, rates):
            stages[spec.stage].append(build_block(spec, act, norm, drop_path_rate=rate))
        self.stages = nn.Sequential(*[nn.Sequential(*blocks) for blocks in stages])
        self.feature_info = [
            dict(num_chs=stage.out_chs, reduction=red, module=f"stages.{i}")
            for i, (stage, red) in enumerate(zip(arch.stages, arch.reductions()))
        ]
        self.num_features = self.head_hidden_size = arch.num_features
        self.conv_head, self.head = build_head(
            arch.stages[-1].out_chs,
            arch.head,
            arch.num_classes,
            act_layer=act,
            norm_layer=norm,
            global_pool=global_pool,
        )

    # -- timm model surface ----------------------------------------------------------

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None), (r"^conv_head", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x)
        else:
            x = self.stages(x)
        return self.conv_head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features after each stage in ``indices`` (NCHW), plus the final features unless ``intermediates_only``."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt {output_fmt!r} is not supported; BlockNet is NCHW only")
        take, max_index = _take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages if not (stop_early or intermediates_only) else self.stages[: max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.conv_head(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop stages after the last one in ``indices`` (and the head); returns the kept indices."""
        take, max_index = _take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.conv_head = nn.Identity()
            self.reset_classifier(0, "")
        return take
