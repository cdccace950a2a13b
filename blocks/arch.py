"""``ArchConfig``: the validated, YAML-round-trippable description of a whole network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .cost import Cost, CostKnobs, out_size
from .registry import UnknownBlockError, get_block
from .schema import ConfigError, flatten, load_yaml, parse, to_plain

__all__ = ["ACT_LAYERS", "NORM_LAYERS", "ArchConfig", "BlockSpec", "HeadConfig", "StageConfig", "StemConfig"]

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


def _check_positive(value: float, key: str) -> None:
    if value <= 0:
        raise ConfigError(f"{value} must be > 0", path=key)


@dataclass(frozen=True)
class StemConfig:
    """The first conv → norm → act, from ``in_chans`` to ``out_chs``."""

    out_chs: int = 16
    kernel_size: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        _check_positive(self.out_chs, "out_chs")
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
        _check_positive(self.out_chs, "out_chs")
        if self.depth < 1:
            raise ConfigError(f"{self.depth} must be >= 1", path="depth")
        _check_stride(self.stride, "stride")
        _check_kernel(self.kernel_size, "kernel_size")
        _check_positive(self.expand_ratio, "expand_ratio")
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


@dataclass(frozen=True)
class ArchConfig:
    """A whole network: stem, stages, head, activation/norm, input and classes.

    ``meta`` carries free-form notes (e.g. the metrics a discovered network was found
    with); it is saved and loaded but is not part of equality or the hash.
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
        _check_positive(self.in_chans, "in_chans")
        if self.num_classes < 0:
            raise ConfigError(f"{self.num_classes} must be >= 0 (0: no classifier)", path="num_classes")
        for i, size in enumerate(self.input_size):
            _check_positive(size, f"input_size[{i}]")

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
        from .network_cost import arch_cost

        return arch_cost(self)

    def params(self) -> int:
        return self.cost().params

    def macs(self) -> int:
        return self.cost().macs

    def flat_params(self) -> dict[str, Any]:
        """Flattened ``key.path -> value`` view, e.g. for MLflow params."""
        plain = self.to_dict()
        plain.pop("meta", None)
        return flatten(plain)


def fields_of(cls: type) -> list[str]:
    """Names of a config dataclass's keys."""
    return [f.name for f in dataclasses.fields(cls)]
