"""Which networks ``blocknas validate`` retrains: the Pareto front and K random other complete trials."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from blocknas.blocks import ArchConfig, ConfigError, StageConfig

from .attrs import ARCH_ATTR, BASELINE_ATTR, LATENCY_ATTR
from .pareto import front_trials
from .validation_config import DEFAULT_RANDOM

__all__ = ["SelectedNetwork", "select_networks", "stage_label"]


@dataclass(frozen=True)
class SelectedNetwork:
    """A network chosen for validation: its trial, architecture and what the search measured."""

    trial: int
    on_front: bool
    arch: ArchConfig
    label: str
    latency_ms: float
    params: int
    score: float  # the trial's recorded accuracy (its first objective)


def select_networks(
    study: optuna.Study, *, random_count: int | None, seed: int, max_front: int | None = None
) -> list[SelectedNetwork]:
    """Every distinct front architecture (at most ``max_front``), then ``random_count`` random distinct others.

    A space can propose one architecture in several trials; each is retrained once (its first
    trial), so duplicates do not inflate the rank correlations. With ``max_front``, the kept
    front architectures are spread evenly over the front's latency range.

    Args:
        study: A study with complete trials.
        random_count: Complete trials off the front to add; ``None``: up to ``DEFAULT_RANDOM``.
        seed: Seed of their choice.
        max_front: Most front architectures kept (``None``: all).

    Raises:
        ConfigError: ``random_count`` is more than the study has off the front.
    """
    seen: set[str] = set()
    front = _distinct(front_trials(study), seen)
    if max_front is not None and len(front) > max_front:
        by_latency = sorted(front, key=_latency)
        keep = {round(i * (len(by_latency) - 1) / max(max_front - 1, 1)) for i in range(max_front)}
        front = [t for i, t in enumerate(by_latency) if i in keep]
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    others = _distinct([t for t in complete if ARCH_ATTR in t.user_attrs], seen)
    if random_count is not None and random_count > len(others):
        raise ConfigError(
            f"{random_count} random networks asked for, but study {study.study_name!r} has {len(others)} distinct "
            f"complete architectures off its front; give {len(others)} or fewer",
            path="random",
        )
    count = min(DEFAULT_RANDOM, len(others)) if random_count is None else random_count
    chosen = sorted(random.Random(seed).sample(others, count), key=lambda t: t.number)
    return [_network(t, on_front=True) for t in front] + [_network(t, on_front=False) for t in chosen]


def stage_label(stage: StageConfig) -> str:
    """``block:width x depth k<kernel>``, plus ``e<expand>``/``se<ratio>`` where they are not the default."""
    label = f"{stage.block}:{stage.out_chs}x{stage.depth}k{stage.kernel_size}"
    label += f"e{stage.expand_ratio:g}" if stage.expand_ratio != 1 else ""
    return label + (f"se{stage.se_ratio:g}" if stage.se_ratio else "")


def _latency(trial: FrozenTrial) -> float:
    return float(trial.user_attrs.get(LATENCY_ATTR, float("nan")))


def _distinct(trials: Iterable[FrozenTrial], seen: set[str]) -> list[FrozenTrial]:
    """The first trial of each architecture whose hash is not in ``seen`` (which is updated)."""
    out = []
    for trial in trials:
        key = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR]).short_hash()
        if key not in seen:
            seen.add(key)
            out.append(trial)
    return out


def _network(trial: FrozenTrial, *, on_front: bool) -> SelectedNetwork:
    arch = ArchConfig.from_dict(trial.user_attrs[ARCH_ATTR])
    label = trial.user_attrs.get(BASELINE_ATTR) or " / ".join(stage_label(s) for s in arch.stages)
    return SelectedNetwork(
        trial.number, on_front, arch, str(label), _latency(trial), arch.cost().params, float(trial.values[0])
    )
