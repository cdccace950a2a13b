"""``AblationConfig``: one YAML file describing an ablation, and the variants it defines.

An ablation holds everything fixed except its *factors*. A factor is named by the
architecture key it changes:

* a stage field (``block``, ``kernel_size``, ``expand_ratio``, ``se_ratio``,
  ``mid_norm_act``, ``depth``, ...) changes that field in every stage;
* ``s<i>.<field>`` (``s1.kernel_size``) changes it in stage ``i`` only;
* ``act_layer`` / ``norm_layer`` change the whole network's activation / norm.

Each factor lists its levels and a *base level* (the reference every other level is
compared against). The *base variant* has every factor at its base level; with a budget
match, every other variant's widths are scaled to its params / MACs / latency.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from blocknas.blocks import ArchConfig, ConfigError, StageConfig, resolve_arch
from blocknas.blocks.schema import check_range, excerpt
from blocknas.search.data import DataConfig
from blocknas.search.latency import LatencyTarget
from blocknas.search.seeding import check_seed
from blocknas.search.study.config import StudyBase
from blocknas.search.training import TrainConfig

__all__ = [
    "ARCH_FACTORS",
    "MAX_ABLATION_SEEDS",
    "MAX_MATCH_STEPS",
    "MAX_MULTIPLIER",
    "MAX_VARIANTS",
    "STAGE_FACTORS",
    "AblationConfig",
    "FactorConfig",
    "Level",
    "MatchConfig",
    "Variant",
    "apply_level",
    "build_variants",
    "format_level",
    "load_ablation_config",
]

Level = Union[str, int, float, bool]
STAGE_FACTORS = tuple(f.name for f in dataclasses.fields(StageConfig))
ARCH_FACTORS = ("act_layer", "norm_layer")
MatchMetric = Literal["params", "macs", "latency"]
MATCH_METRICS = typing.get_args(MatchMetric)

MAX_ABLATION_SEEDS = 1000
"""Most seeds of an ablation (a count, or the length of a list)."""
MAX_MATCH_STEPS = 1000
"""Most budget-match evaluations per variant."""
MAX_MULTIPLIER = 64.0
"""Widest width multiplier a budget match tries (and 1/64 the narrowest)."""
MAX_VARIANTS = 1000
"""Most variants of an ablation: planning builds and budget-matches each (4-20 ms apiece on a 2-core
machine, 10^5 took 15 minutes), and every one trains ``seeds`` times."""


@dataclass(frozen=True)
class FactorConfig:
    """The levels of one factor.

    Attributes:
        levels: The values the factor takes, at least two, all different.
        base: The reference level; default: the base architecture's value when it is one
            of the levels, else the first level.
    """

    levels: tuple[Level, ...]
    base: Level | None = None

    def __post_init__(self) -> None:
        if len(self.levels) < 2:
            raise ConfigError(f"a factor needs at least two levels, got {list(self.levels)}", path="levels")
        if len(self.levels) > MAX_VARIANTS:
            raise ConfigError(
                f"{len(self.levels):,} levels are over the limit of {MAX_VARIANTS:,} variants per ablation",
                path="levels",
            )
        for i, level in enumerate(self.levels):
            if any(_same(level, other) for other in self.levels[:i]):
                raise ConfigError(f"{level!r} is listed twice", path=f"levels[{i}]")
        if self.base is not None and not any(_same(self.base, level) for level in self.levels):
            raise ConfigError(f"{self.base!r} is not one of the levels {list(self.levels)}", path="base")


@dataclass(frozen=True)
class MatchConfig:
    """Budget matching: scale each variant's widths until ``metric`` is within ``tolerance`` of the base variant.

    Attributes:
        metric: ``params`` and ``macs`` are analytic (exact, instant); ``latency`` is measured
            with the ablation's latency target (noisy, seconds per step).
        tolerance: Allowed relative error, e.g. 0.05 for ±5 %.
        max_steps: Most evaluations per variant; default 40 for params/MACs, 8 for latency.
        min_multiplier: Smallest width multiplier tried.
        max_multiplier: Largest width multiplier tried.
    """

    metric: MatchMetric
    tolerance: float = 0.05
    max_steps: int | None = None
    min_multiplier: float = 0.125
    max_multiplier: float = 8.0

    def __post_init__(self) -> None:
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"{self.tolerance} must be in (0, 1), e.g. 0.05 for ±5 %", path="tolerance")
        if self.max_steps is not None:
            check_range(self.max_steps, "max_steps", 1, MAX_MATCH_STEPS)
        if not 0 < self.min_multiplier < 1 < self.max_multiplier:
            raise ConfigError(
                f"need 0 < min_multiplier < 1 < max_multiplier, got {self.min_multiplier} and {self.max_multiplier}",
                path="min_multiplier",
            )
        check_range(self.min_multiplier, "min_multiplier", 1 / MAX_MULTIPLIER, 1)
        check_range(self.max_multiplier, "max_multiplier", 1, MAX_MULTIPLIER)

    @property
    def steps(self) -> int:
        return self.max_steps or (8 if self.metric == "latency" else 40)


@dataclass(frozen=True)
class AblationConfig(StudyBase):
    """Everything an ablation needs: base architecture, factors, seeds, data, training, latency, budget match.

    The study's name and stores are :class:`~blocknas.search.study.config.StudyBase`'s; the report
    goes to ``<runs_dir>/<name>/report``.

    Attributes:
        base: The base architecture: a YAML path (relative to this file or the working
            directory), a registered ``blocknet_*`` name, or an inline mapping.
        factors: Factor name → levels; see the module docstring for the names.
        design: ``grid`` (every combination of levels) or ``one_at_a_time`` (the base
            variant plus each non-base level of each factor, the others at base).
        seeds: How many seeds (``3`` → 0, 1, 2) or the list of seeds. A seed fixes weight
            initialisation and data order, the same for every variant, so differences pair.
        match: Optional budget match: ``params``, ``macs``, ``latency`` or a mapping
            (``{metric: params, tolerance: 0.05}``).
        on_unmatched: ``train`` a variant that cannot be matched anyway (flagged in the
            report) or ``skip`` it (listed as not matched, never trained).
        confidence: Confidence level of the paired-difference intervals.
    """

    base: Union[str, dict[str, Any]]
    factors: dict[str, FactorConfig]
    design: Literal["grid", "one_at_a_time"] = "grid"
    seeds: Union[int, tuple[int, ...]] = 3
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    latency: LatencyTarget = LatencyTarget()
    match: Union[str, MatchConfig, None] = None
    on_unmatched: Literal["train", "skip"] = "train"
    confidence: float = 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.factors:
            raise ConfigError("at least one factor is required", path="factors")
        self._check_seeds()
        if not 0 < self.confidence < 1:
            raise ConfigError(f"{self.confidence} must be in (0, 1), e.g. 0.95", path="confidence")
        if isinstance(self.match, str) and self.match not in MATCH_METRICS:
            raise ConfigError(
                f"{self.match!r} is not one of {', '.join(map(repr, MATCH_METRICS))} "
                "(or a mapping such as {metric: params, tolerance: 0.05})",
                path="match",
            )
        for name in self.factors:
            _check_factor_name(name)
        self._check_size()

    def _check_size(self) -> None:
        """At most ``MAX_VARIANTS`` variants: counted from the levels, before any is built."""
        counts = [len(f.levels) for f in self.factors.values()]
        if self.design == "grid":
            count = math.prod(counts)
            what = f"a grid of {count:,} variants ({' × '.join(map(str, counts))} levels)"
        else:
            count = 1 + sum(counts)
            what = f"up to {count:,} variants (the base, then each factor's levels one at a time)"
        if count > MAX_VARIANTS:
            raise ConfigError(
                f"{what} is over the limit of {MAX_VARIANTS:,}: planning builds (and budget-matches) every variant, "
                "and each trains once per seed; vary fewer factors or levels at once, use design: one_at_a_time, "
                "or explore a space this large with blocknas search",
                path="factors",
            )

    def _check_seeds(self) -> None:
        """A count of 1 to ``MAX_ABLATION_SEEDS``, or as many distinct seeds, each in the seed range."""
        if isinstance(self.seeds, int):
            check_range(self.seeds, "seeds", 1, MAX_ABLATION_SEEDS)
            return
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or len(self.seeds) > MAX_ABLATION_SEEDS:
            raise ConfigError(
                f"{excerpt(list(self.seeds))} must be a list of 1 to {MAX_ABLATION_SEEDS:,} distinct seeds",
                path="seeds",
            )
        for i, seed in enumerate(self.seeds):
            check_seed(seed, f"seeds[{i}]")

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seeds)) if isinstance(self.seeds, int) else self.seeds

    @property
    def matching(self) -> MatchConfig | None:
        """The budget match as a :class:`MatchConfig` (the string shorthand expanded)."""
        if isinstance(self.match, str):
            return MatchConfig(metric=typing.cast(MatchMetric, self.match))
        return self.match

    @property
    def report_dir(self) -> Path:
        return Path(self.runs_dir) / self.name / "report"

    def base_arch(self) -> ArchConfig:
        """The base architecture; a relative path is looked up beside this config file first."""
        ref: Any = self.base
        if isinstance(ref, str) and self.source and not Path(ref).is_absolute():
            beside = Path(self.source).parent / ref
            if beside.is_file() and not Path(ref).is_file():
                ref = str(beside)
        try:
            return resolve_arch(ref)
        except ConfigError as exc:
            raise exc.within("base", self.source) from None

    def definition(self, base: ArchConfig) -> dict[str, Any]:
        """What a resumed study must share with its first run.

        ``cells`` hashes what decides the variants and seeds (base, factors, design, seeds,
        budget match), ``variants`` the same without the seeds (a resume may add seeds to the
        same variants); ``settings`` keeps data, training and latency target as plain values,
        so a resume can name a changed setting
        (see :func:`~blocknas.search.study.definition.definition_changes`).
        """
        plain = self.to_dict()
        variants = self._variants_key(base)
        return {
            "cells": _digest({**variants, "seeds": list(self.seed_list)}),
            "variants": _digest(variants),
            "settings": {k: plain[k] for k in ("data", "train", "latency")},
        }

    def _variants_key(self, base: ArchConfig) -> dict[str, Any]:
        plain = self.to_dict()
        return {**{k: plain[k] for k in ("factors", "design", "match", "on_unmatched")}, "base": base.to_dict()}


def _digest(data: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_ablation_config(path: str | Path) -> AblationConfig:
    """Load and validate an ablation YAML file; errors name the file and key path."""
    return AblationConfig.load(path)


# -- factors and variants ---------------------------------------------------------------


def _factor_help() -> str:
    return (
        f"a factor is a stage field ({', '.join(STAGE_FACTORS)}) applied to every stage, "
        f"'s<i>.<field>' for stage i only, or one of {', '.join(ARCH_FACTORS)}"
    )


def _split_factor(name: str) -> tuple[int | None, str]:
    """``'s1.kernel_size'`` → ``(1, 'kernel_size')``; ``'block'`` → ``(None, 'block')``."""
    head, dot, tail = name.partition(".")
    if dot and head.startswith("s") and head[1:].isdigit():
        return int(head[1:]), tail
    return None, name


def _check_factor_name(name: str) -> None:
    stage, key = _split_factor(name)
    if key in STAGE_FACTORS and (stage is not None or "." not in name):
        return
    if stage is None and key in ARCH_FACTORS:
        return
    raise ConfigError(f"unknown factor {name!r}; {_factor_help()}", path=f"factors.{name}")


def format_level(level: Level) -> str:
    """A level as text: ``true``/``false`` for booleans, ``str()`` otherwise."""
    return str(level).lower() if isinstance(level, bool) else str(level)


def _same(a: Level, b: Level) -> bool:
    """Equal as config values: ``True`` is not ``1``, but ``3`` is ``3.0``."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def apply_level(arch: ArchConfig, factor: str, level: Level) -> ArchConfig:
    """``arch`` with one factor set to ``level`` (validated: a bad level raises :class:`ConfigError`)."""
    stage, key = _split_factor(factor)
    plain = arch.to_dict()
    if key in ARCH_FACTORS:
        plain[key] = level
    else:
        if stage is not None and not 0 <= stage < len(arch.stages):
            raise ConfigError(
                f"stage {stage} does not exist; the base architecture has stages 0..{len(arch.stages) - 1}"
            )
        for i in range(len(arch.stages)) if stage is None else (stage,):
            plain["stages"][i][key] = level
    return ArchConfig.from_dict(plain)


def _current_level(arch: ArchConfig, factor: str) -> Any:
    """The base architecture's value of a factor, or ``None`` when stages disagree."""
    stage, key = _split_factor(factor)
    if key in ARCH_FACTORS:
        return getattr(arch, key)
    values = {repr(getattr(s, key)) for s in (arch.stages if stage is None else arch.stages[stage : stage + 1])}
    return getattr(arch.stages[stage or 0], key) if len(values) == 1 else None


def base_levels(config: AblationConfig, arch: ArchConfig) -> dict[str, Level]:
    """The base level of every factor (explicit, else the architecture's own value if listed, else the first)."""
    levels = {}
    for name, factor in config.factors.items():
        if factor.base is not None:
            levels[name] = factor.base
            continue
        current = _current_level(arch, name)
        levels[name] = next(
            (lv for lv in factor.levels if current is not None and _same(lv, current)), factor.levels[0]
        )
    return levels


@dataclass(frozen=True)
class Variant:
    """One network of the ablation: its factor levels and its (unscaled) architecture."""

    name: str
    levels: dict[str, Level]
    arch: ArchConfig
    is_base: bool


def variant_name(levels: Mapping[str, Level]) -> str:
    """``block=separable,kernel_size=5``: every factor's level, in factor order."""
    return ",".join(f"{k}={format_level(v)}" for k, v in levels.items())


def _level_combinations(config: AblationConfig, base: dict[str, Level]) -> list[dict[str, Level]]:
    names = list(config.factors)
    if config.design == "grid":
        return [dict(zip(names, combo)) for combo in itertools.product(*(config.factors[n].levels for n in names))]
    combos = [dict(base)]
    for name in names:
        combos += [{**base, name: lv} for lv in config.factors[name].levels if not _same(lv, base[name])]
    return combos


def build_variants(config: AblationConfig, arch: ArchConfig) -> list[Variant]:
    """Every variant the design defines, base variant first; bad levels raise with their key path."""
    base = base_levels(config, arch)
    for name, factor in config.factors.items():  # check each level alone, so the error names it
        for i, level in enumerate(factor.levels):
            try:
                apply_level(arch, name, level)
            except ConfigError as exc:
                raise ConfigError(
                    f"{format_level(level)!r} does not give a valid network: {exc}",
                    path=f"factors.{name}.levels[{i}]",
                    source=config.source,
                ) from None
    variants = []
    for levels in _level_combinations(config, base):
        variant_arch = arch
        for name, level in levels.items():
            variant_arch = apply_level(variant_arch, name, level)
        is_base = all(_same(levels[n], base[n]) for n in levels)
        variants.append(Variant(variant_name(levels), levels, variant_arch, is_base))
    variants.sort(key=lambda v: not v.is_base)
    return variants
