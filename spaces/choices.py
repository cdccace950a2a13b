"""The parts of a search-space YAML file: per-stage, per-block, stem and head choices.

Key rule: a plural key (``widths``, ``kernel_sizes``) is a list of choices, a singular
key (``kernel_size``, ``depth``, ``drop_rate``) is a fixed value; ``depth`` may also be a
``{min, max}`` range. Every choice is checked with the rules of the :class:`ArchConfig`
field it becomes, by parsing that field with the value, so a space can only produce
valid architectures and errors read the same as an architecture file's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blocknas.blocks import ConfigError, CostKnobs, HeadConfig, StageConfig, StemConfig, get_block, list_blocks, parse
from blocknas.blocks.schema import to_plain

__all__ = [
    "BLOCK_KNOBS",
    "BlockChoices",
    "DepthRange",
    "HeadChoices",
    "StageChoices",
    "StemChoices",
    "block_uses",
    "check_choices",
    "check_value",
    "expand_shorthands",
]

# Knobs that only some blocks use: listed under a block, never at stage level.
# The value is a probe that changes the cost of any block that uses the knob.
BLOCK_KNOBS: dict[str, Any] = {"expand_ratio": 2.0, "mid_norm_act": False}


def block_uses(block: str, knob: str) -> bool:
    """Whether ``block`` uses the block-specific ``knob`` (a key of :data:`BLOCK_KNOBS`).

    The block registry records no such flags, so this asks the block's analytic cost
    formula: a knob that does not change the cost is ignored. Blocks without a cost
    formula are assumed to use every knob.
    """
    cost = getattr(get_block(block), "cost", None)
    if cost is None:
        return True
    base, probe = CostKnobs(), dataclasses.replace(CostKnobs(), **{knob: BLOCK_KNOBS[knob]})
    try:
        return bool(cost(16, 16, (8, 8), base) != cost(16, 16, (8, 8), probe))
    except NotImplementedError:
        return True


def check_choices(
    cls: type, field: str, values: Sequence[Any], key: str, base: Mapping[str, Any] | None = None
) -> None:
    """Check a choice list: not empty, no repeats, each value valid for ``cls.field``.

    Args:
        cls: The config dataclass the value ends up in (``StageConfig``, ``ArchConfig``, ...).
        field: The field of ``cls`` each choice is assigned to.
        values: The choices.
        key: Key path of the list, for errors (``kernel_sizes``).
        base: Other fields ``cls`` requires to be parsed at all.
    """
    if not values:
        raise ConfigError("no choices; list at least one value", path=key)
    seen: set[Any] = set()  # a set, not a scan of the list so far: a long list costs linear time
    for j, value in enumerate(values):
        if value in seen:
            raise ConfigError(f"{value!r} is listed twice", path=f"{key}[{j}]")
        seen.add(value)
        check_value(cls, field, value, f"{key}[{j}]", base)


def check_value(cls: type, field: str, value: Any, key: str, base: Mapping[str, Any] | None = None) -> None:
    """Check that ``value`` is valid for ``cls.field``; errors are reported at ``key``."""
    try:
        parse(cls, {**(base or {}), field: value})
    except ConfigError as exc:
        raise ConfigError(exc.message, path=key) from None


def _stage_base() -> dict[str, Any]:
    """The fields a ``StageConfig`` needs, so one other field can be checked alone."""
    return {"block": list_blocks()[0], "out_chs": 1}


def _check_stage_choices(field: str, values: Sequence[Any] | None, key: str) -> None:
    if values is not None:
        check_choices(StageConfig, field, values, key, _stage_base())


@dataclass(frozen=True)
class DepthRange:
    """Blocks per stage, ``min`` to ``max`` inclusive (``depth: 2`` is ``{min: 2, max: 2}``).

    Both are checked as a stage's ``depth`` is (1 to ``MAX_DEPTH``), and the choices are a ``range``,
    never a materialised list, so counting a space costs nothing per depth value.

    Attributes:
        min: Fewest blocks in the stage.
        max: Most blocks in the stage.
    """

    min: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        for bound in ("min", "max"):
            check_value(StageConfig, "depth", getattr(self, bound), bound, _stage_base())
        if self.min > self.max:
            raise ConfigError(f"min {self.min} is greater than max {self.max}; need min <= max")

    @property
    def choices(self) -> range:
        return range(self.min, self.max + 1)


@dataclass(frozen=True)
class BlockChoices:
    """One block type of a stage, with the knobs that belong to it.

    ``kernel_sizes`` and ``se_ratios`` override the stage's lists for this block;
    ``expand_ratios`` and ``mid_norm_acts`` exist only here, because only some blocks
    use them (``None``: the ``StageConfig`` default).

    Attributes:
        name: A registered block's name.
        kernel_sizes: Kernel sizes for this block (null: the stage's ``kernel_sizes``).
        se_ratios: Squeeze-excite ratios for this block (null: the stage's ``se_ratios``).
        expand_ratios: Expansion ratios, for blocks that use one (null: the block's default).
        mid_norm_acts: ``mid_norm_act`` choices, for blocks that have it (null: the default).
    """

    name: str
    kernel_sizes: tuple[int, ...] | None = None
    se_ratios: tuple[float, ...] | None = None
    expand_ratios: tuple[float, ...] | None = None
    mid_norm_acts: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        try:
            get_block(self.name)
        except KeyError as exc:
            raise ConfigError(str(exc)) from None
        for field in ("kernel_size", "se_ratio", *BLOCK_KNOBS):
            _check_stage_choices(field, getattr(self, f"{field}s"), f"{field}s")
        for knob in BLOCK_KNOBS:
            if getattr(self, f"{knob}s") is not None and not block_uses(self.name, knob):
                users = [b for b in list_blocks() if block_uses(b, knob)]
                raise ConfigError(
                    f"block {self.name!r} does not use {knob}; list {knob}s only under blocks that do "
                    f"({', '.join(users) or 'none registered'})",
                    path=f"{knob}s",
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain data without the unset (``None``) knobs."""
        return {key: value for key, value in to_plain(self).items() if value is not None}


@dataclass(frozen=True)
class StageChoices:
    """The choices of one stage; the block is chosen first, then its knobs.

    Attributes:
        blocks: Block names, or mappings ``{name: ..., <knob>s: [...]}`` with the block's own choices.
        widths: Output channel choices.
        depth: Blocks per stage: a number, or ``{min: ..., max: ...}``.
        strides: Stride choices (1, 2).
        kernel_sizes: Kernel size choices, odd.
        se_ratios: Squeeze-excite ratio choices (0: none).
    """

    blocks: tuple[BlockChoices, ...]
    widths: tuple[int, ...]
    depth: DepthRange = DepthRange()
    strides: tuple[int, ...] = (1,)
    kernel_sizes: tuple[int, ...] = (3,)
    se_ratios: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        if not self.blocks:
            raise ConfigError(f"no choices; list at least one of: {', '.join(list_blocks())}", path="blocks")
        names = [b.name for b in self.blocks]
        for j, name in enumerate(names):
            if name in names[:j]:
                raise ConfigError(f"{name!r} is listed twice", path=f"blocks[{j}]")
        _check_stage_choices("out_chs", self.widths, "widths")
        _check_stage_choices("stride", self.strides, "strides")
        _check_stage_choices("kernel_size", self.kernel_sizes, "kernel_sizes")
        _check_stage_choices("se_ratio", self.se_ratios, "se_ratios")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, blocks without their unset knobs."""
        return {**to_plain(self), "blocks": [b.to_dict() for b in self.blocks]}


@dataclass(frozen=True)
class StemChoices:
    """Stem width choices; its kernel and stride are fixed.

    Attributes:
        widths: Output channel choices.
        kernel_size: The stem's kernel size, odd.
        stride: The stem's stride, 1 or 2.
    """

    widths: tuple[int, ...] = (16,)
    kernel_size: int = 3
    stride: int = 1

    def __post_init__(self) -> None:
        check_choices(StemConfig, "out_chs", self.widths, "widths")
        parse(StemConfig, {"kernel_size": self.kernel_size, "stride": self.stride})


@dataclass(frozen=True)
class HeadChoices:
    """Head conv width choices (``num_features``; 0: no head conv) and a fixed drop rate.

    Attributes:
        widths: Head conv width choices; 0: no head conv.
        drop_rate: Dropout before the classifier.
    """

    widths: tuple[int, ...] = (0,)
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        check_choices(HeadConfig, "num_features", self.widths, "widths")
        parse(HeadConfig, {"drop_rate": self.drop_rate})


def expand_shorthands(data: Any) -> Any:
    """Rewrite the short forms into the full ones, leaving anything malformed for :func:`parse`.

    ``blocks: [standard, ...]`` items become ``{name: standard}`` and ``depth: 2``
    becomes ``{min: 2, max: 2}``. A block-specific knob at stage level is an error
    that says where it belongs. The input is not modified.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("stages"), list):
        return data
    return {**data, "stages": [_expand_stage(i, stage) for i, stage in enumerate(data["stages"])]}


def _expand_stage(index: int, stage: Any) -> Any:
    if not isinstance(stage, Mapping):
        return stage
    for knob in BLOCK_KNOBS:
        if f"{knob}s" in stage:
            raise ConfigError(
                f"{knob}s is block-specific; list it under the blocks that use it, "
                f"e.g. blocks: [{{name: inverted_residual, {knob}s: [...]}}]",
                path=f"stages[{index}].{knob}s",
            )
    stage = dict(stage)
    if isinstance(stage.get("blocks"), list):
        stage["blocks"] = [{"name": b} if isinstance(b, str) else b for b in stage["blocks"]]
    depth = stage.get("depth")
    if isinstance(depth, int) and not isinstance(depth, bool):
        stage["depth"] = {"min": depth, "max": depth}
    return stage
