"""``ArchConfig``: the validated, YAML-round-trippable description of a whole network."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from .cost import Cost, CostKnobs, out_size
from .layers import build_block, build_head, build_stem
from .network_cost import block_cost, head_cost, meta_cost, stem_cost
from .parts import ACT_LAYERS, NORM_LAYERS, BlockSpec, HeadConfig, StageConfig, StemConfig
from .schema import ConfigError, check_range, flatten, parse, to_plain
from .yaml_file import load_yaml

__all__ = ["MAX_CLASSES", "MAX_INPUT_SIDE", "MAX_IN_CHANS", "ArchConfig"]

MAX_IN_CHANS = 1024
"""Most input channels (hyperspectral images have a few hundred)."""
MAX_CLASSES = 1_000_000
"""Most output classes."""
MAX_INPUT_SIDE = 4096
"""Largest input height or width, in pixels."""


@dataclass(frozen=True)
class ArchConfig:
    """A whole network: stem, stages, head, activation/norm, input and classes.

    ``meta`` carries free-form notes (e.g. the metrics a discovered network was found
    with); it is saved and loaded but is not part of equality or the hash.

    Attributes:
        stages: The stages, in order (at least one).
        stem: The first conv.
        head: The optional head conv and the dropout before the classifier.
        act_layer: Activation of the whole network (``relu``, ``hard_swish``, ``silu``, ...).
        norm_layer: Norm layer of the whole network (``batchnorm2d``, ...).
        in_chans: Input channels.
        num_classes: Classifier outputs; 0: no classifier (features only).
        input_size: ``[height, width]`` the network is designed and measured for.
        meta: Free-form notes (a discovered network's metrics, its data and preprocessing).
    """

    stages: tuple[StageConfig, ...]
    stem: StemConfig = StemConfig()
    head: HeadConfig = HeadConfig()
    act_layer: str = "relu"
    norm_layer: str = "batchnorm2d"
    in_chans: int = 3
    num_classes: int = 10
    input_size: tuple[int, int] = (32, 32)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("at least one stage is required", path="stages")
        if self.act_layer not in ACT_LAYERS:
            raise ConfigError(
                f"unknown activation {self.act_layer!r}; allowed: {', '.join(ACT_LAYERS)}", path="act_layer"
            )
        if self.norm_layer not in NORM_LAYERS:
            raise ConfigError(
                f"unknown norm layer {self.norm_layer!r}; allowed: {', '.join(NORM_LAYERS)}", path="norm_layer"
            )
        check_range(self.in_chans, "in_chans", 0, MAX_IN_CHANS, above=True)
        check_range(self.num_classes, "num_classes", 0, MAX_CLASSES, hint=" (0: no classifier)")
        for i, size in enumerate(self.input_size):
            check_range(size, f"input_size[{i}]", 0, MAX_INPUT_SIDE, above=True)

    # -- construction and persistence -------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> ArchConfig:
        """Parse and validate a plain mapping; errors name the key path."""
        return parse(cls, data, source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ArchConfig:
        """Load an architecture YAML file; errors name the file and key path."""
        return cls.from_dict(load_yaml(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` turns back into an equal config."""
        plain = to_plain(self)
        if not plain["meta"]:
            del plain["meta"]
        return plain

    def to_yaml(self, path: str | Path | None = None) -> str:
        """YAML text of the config; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    def replace(self, **changes: Any) -> ArchConfig:
        """A validated copy with top-level fields changed."""
        return self.from_dict({**self.to_dict(), **to_plain(changes)})

    def short_hash(self) -> str:
        """Stable 8-hex-digit id of the architecture (``meta`` excluded)."""
        plain = self.to_dict()
        plain.pop("meta", None)
        return hashlib.sha1(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:8]

    # -- derived structure ------------------------------------------------------------

    @property
    def stem_hw(self) -> tuple[int, int]:
        return out_size(self.input_size, self.stem.stride)

    @property
    def num_features(self) -> int:
        return self.head.num_features or self.stages[-1].out_chs

    def block_specs(self) -> list[BlockSpec]:
        """Every block in order with its resolved input width and spatial size."""
        specs, in_chs, hw = [], self.stem.out_chs, self.stem_hw
        for s, stage in enumerate(self.stages):
            for i in range(stage.depth):
                knobs = CostKnobs(
                    stride=stage.stride if i == 0 else 1,
                    kernel_size=stage.kernel_size,
                    expand_ratio=stage.expand_ratio,
                    se_ratio=stage.se_ratio,
                    mid_norm_act=stage.mid_norm_act,
                )
                spec = BlockSpec(s, i, stage.block, in_chs, stage.out_chs, hw, knobs, stage.skip)
                specs.append(spec)
                in_chs, hw = stage.out_chs, spec.out_hw
        return specs

    def reductions(self) -> list[int]:
        """Total stride at the output of each stage."""
        total, out = self.stem.stride, []
        for stage in self.stages:
            total *= stage.stride
            out.append(total)
        return out

    def cost(self) -> Cost:
        """Parameters and MACs of the network, analytic where every block has a formula."""
        specs = self.block_specs()
        total = stem_cost(self.in_chans, self.stem, self.stem_hw)
        total += head_cost(self.stages[-1].out_chs, specs[-1].out_hw, self.head, self.num_classes)
        for spec in specs:
            cost = block_cost(spec)
            if cost is None:
                return self.measured_cost()
            total += cost
        return total

    def measured_cost(self) -> Cost:
        """Parameters and MACs counted on the network's layers built on the meta device."""
        return meta_cost(self._layers, (self.in_chans, *self.input_size))

    def _layers(self) -> nn.Module:
        """Stem, blocks and head in one ``nn.Sequential``, built as ``BlockNet`` builds them."""
        act, norm = self.act_layer, self.norm_layer
        return nn.Sequential(
            build_stem(self.in_chans, self.stem, act_layer=act, norm_layer=norm),
            *(build_block(spec, act, norm) for spec in self.block_specs()),
            *build_head(self.stages[-1].out_chs, self.head, self.num_classes, act_layer=act, norm_layer=norm),
        )

    def params(self) -> int:
        return self.cost().params

    def macs(self) -> int:
        return self.cost().macs

    def flat_params(self) -> dict[str, Any]:
        """Flattened ``key.path -> value`` view, e.g. for MLflow params."""
        plain = self.to_dict()
        plain.pop("meta", None)
        return flatten(plain)
