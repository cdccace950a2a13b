"""Budget matching: one width multiplier per variant, bisected until its cost matches a target.

Pure: the cost is a ``measure(arch) -> float`` callable, analytic (params, MACs) or
measured (latency), so the search is tested on formulas and used on measurements alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from timm.layers import make_divisible

from blocknas.blocks import ArchConfig

__all__ = ["WidthMatch", "match_width", "scale_widths", "widths"]

DIVISOR = 8


def scale_widths(arch: ArchConfig, multiplier: float) -> ArchConfig:
    """``arch`` with stem, stage and head widths (head only if nonzero) times ``multiplier``.

    Widths are rounded to multiples of 8 (at least 8) with timm's ``make_divisible``;
    ``multiplier == 1`` returns ``arch`` unchanged, even if its widths are not multiples of 8.
    """
    if multiplier == 1:
        return arch
    plain = arch.to_dict()
    plain["stem"]["out_chs"] = make_divisible(arch.stem.out_chs * multiplier, DIVISOR)
    for stage, original in zip(plain["stages"], arch.stages):
        stage["out_chs"] = make_divisible(original.out_chs * multiplier, DIVISOR)
    if arch.head.num_features:
        plain["head"]["num_features"] = make_divisible(arch.head.num_features * multiplier, DIVISOR)
    return ArchConfig.from_dict(plain)


def widths(arch: ArchConfig) -> tuple[int, ...]:
    """Stem, stage and head widths: the part of an architecture that width scaling changes."""
    return (arch.stem.out_chs, *(s.out_chs for s in arch.stages), arch.head.num_features)


@dataclass(frozen=True)
class WidthMatch:
    """The outcome of matching one variant: the scaled architecture and how close it came."""

    arch: ArchConfig
    multiplier: float
    target: float
    achieved: float
    tolerance: float
    evaluations: int

    @property
    def rel_error(self) -> float:
        """``achieved / target - 1`` (signed)."""
        return self.achieved / self.target - 1.0

    @property
    def matched(self) -> bool:
        return abs(self.rel_error) <= self.tolerance

    def describe(self, fmt: Callable[[float], str] = "{:,.0f}".format) -> str:
        """``matched (+1.2%)`` or ``not matched (achieved 30,120, +12.0%)``."""
        if self.matched:
            return f"matched ({self.rel_error:+.1%})"
        return f"not matched (achieved {fmt(self.achieved)}, {self.rel_error:+.1%})"


def match_width(
    arch: ArchConfig,
    target: float,
    measure: Callable[[ArchConfig], float],
    *,
    tolerance: float = 0.05,
    max_steps: int = 40,
    bounds: tuple[float, float] = (0.125, 8.0),
) -> WidthMatch:
    """Find the width multiplier whose cost is closest to ``target``, stopping once within ``tolerance``.

    The cost is assumed to grow with width. The unscaled architecture is tried first;
    then the multiplier is bisected (geometrically) between it and a bound. Widths are
    rounded, so many multipliers give the same network: each distinct network is measured
    once, and only distinct measurements count toward ``max_steps``.

    Args:
        arch: The variant at its original widths.
        target: The cost to reach (the base variant's).
        measure: Cost of an architecture (params, MACs, latency in ms, ...).
        tolerance: Accepted relative error.
        max_steps: Most distinct networks measured.
        bounds: Smallest and largest multiplier tried.

    Returns:
        The closest network found; check :attr:`WidthMatch.matched`.
    """
    if target <= 0:
        raise ValueError(f"target must be > 0, got {target}")
    seen: dict[tuple[int, ...], float] = {}
    best: list[tuple[float, float, ArchConfig]] = []  # (multiplier, value, arch), closest first

    def evaluate(multiplier: float) -> float:
        scaled = scale_widths(arch, multiplier)
        key = widths(scaled)
        if key not in seen:
            seen[key] = float(measure(scaled))
        value = seen[key]
        if not best or abs(value / target - 1) < abs(best[0][1] / target - 1):
            best[:] = [(multiplier, value, scaled)]
        return value

    value = evaluate(1.0)
    lo, hi = (bounds[0], 1.0) if value > target else (1.0, bounds[1])
    for _ in range(200):  # plateaus of identical rounded widths cost nothing but an iteration
        if abs(best[0][1] / target - 1) <= tolerance or len(seen) >= max_steps or hi / lo < 1.0001:
            break
        mid = math.sqrt(lo * hi)
        if evaluate(mid) < target:
            lo = mid
        else:
            hi = mid
    multiplier, achieved, scaled = best[0]
    return WidthMatch(scaled, multiplier, target, achieved, tolerance, len(seen))
