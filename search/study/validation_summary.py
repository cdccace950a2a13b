"""What a validation found: rank agreement with intervals, the noise floor, the front after longer training.

:class:`Validation` is computed from the retrained networks, stored as ``validate.json`` on
the validation's MLflow run and rendered as Markdown (``validate.md``, the report's
"Validation" section); every value from data is escaped with :mod:`blocknas.search.markdown`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from blocknas.search.markdown import md_code, md_text
from blocknas.search.training.estimators import Agreement, Interval, rank_agreement

__all__ = ["TrainingBudget", "ValidatedNetwork", "Validation", "summarize"]


@dataclass(frozen=True)
class TrainingBudget:
    """A training budget: epochs, training images (``None``: all the split has) and seed."""

    epochs: int
    train_images: int | None
    seed: int

    def describe(self) -> str:
        images = "all training images" if self.train_images is None else f"{self.train_images:,} training images"
        return f"{self.epochs} epoch(s) on {images}, seed {self.seed}"


@dataclass(frozen=True)
class ValidatedNetwork:
    """One retrained network: the search's score, the longer-budget accuracy and the brief rerun's."""

    trial: int
    on_front: bool
    label: str
    latency_ms: float
    params: int
    score: float
    longer: float
    noise: float
    dominated_by: tuple[int, ...] = ()


@dataclass(frozen=True)
class Validation:
    """The result of ``blocknas validate`` on one study at one longer budget."""

    study: str
    brief: TrainingBudget
    longer: TrainingBudget
    noise: TrainingBudget
    networks: tuple[ValidatedNetwork, ...]
    agreement: Agreement  # the trials' scores vs the longer-budget accuracy
    noise_floor: Agreement  # the trials' scores vs the brief rerun with another seed

    @property
    def front(self) -> list[ValidatedNetwork]:
        return [n for n in self.networks if n.on_front]

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics: τ and ρ with their interval ends, for the agreement and the noise floor."""
        out: dict[str, float] = {"n": len(self.networks), "n_front": len(self.front)}
        out["front_kept"] = sum(not n.dominated_by for n in self.front)
        for prefix, agreement in (("", self.agreement), ("noise_", self.noise_floor)):
            for name in ("tau", "rho"):
                interval: Interval = getattr(agreement, name)
                out |= {f"{prefix}{name}": interval.value, f"{prefix}{name}_low": interval.low}
                out[f"{prefix}{name}_high"] = interval.high
        return out

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Validation:
        """Parse :meth:`to_json`'s output; ``KeyError``, ``TypeError`` or ``ValueError`` when it is not one."""

        def agreement(raw: Mapping[str, Any]) -> Agreement:
            intervals = {k: Interval(*(float(raw[k][f]) for f in ("value", "low", "high"))) for k in _MEASURES}
            return Agreement(int(raw["n"]), **intervals, fraction=float(raw["fraction"]))

        def budget(raw: Mapping[str, Any]) -> TrainingBudget:
            images = raw["train_images"]
            return TrainingBudget(int(raw["epochs"]), None if images is None else int(images), int(raw["seed"]))

        networks = tuple(
            ValidatedNetwork(
                int(n["trial"]),
                bool(n["on_front"]),
                str(n["label"]),
                float(n["latency_ms"]),
                int(n["params"]),
                float(n["score"]),
                float(n["longer"]),
                float(n["noise"]),
                tuple(int(t) for t in n["dominated_by"]),
            )
            for n in data["networks"]
        )
        return cls(
            str(data["study"]),
            budget(data["brief"]),
            budget(data["longer"]),
            budget(data["noise"]),
            networks,
            agreement(data["agreement"]),
            agreement(data["noise_floor"]),
        )

    def markdown(self, level: int = 1) -> str:
        """The result as Markdown, its one heading at ``level``."""
        return _render(self, "#" * level)


_MEASURES = ("tau", "rho", "overlap")


def summarize(
    study: str,
    budgets: tuple[TrainingBudget, TrainingBudget, TrainingBudget],
    networks: Sequence[ValidatedNetwork],
    *,
    seed: int,
    n_boot: int = 1000,
) -> Validation:
    """Rank agreement (bootstrap seeded by ``seed``) and front dominance of the retrained ``networks``.

    Args:
        study: The study's name.
        budgets: The search's, the longer and the noise-floor budget.
        networks: At least 3 retrained networks (``dominated_by`` is filled in here).
        seed: Seed of the bootstrap.
        n_boot: Bootstrap samples of each interval.
    """
    marked = tuple(dataclasses.replace(n, dominated_by=_dominators(networks, n)) for n in networks)
    longer = _agreement([(n.score, n.longer) for n in networks], seed, n_boot)
    noise = _agreement([(n.score, n.noise) for n in networks], seed, n_boot)
    return Validation(study, *budgets, marked, longer, noise)


def _agreement(pairs: Sequence[tuple[float, float]], seed: int, n_boot: int) -> Agreement:
    """:func:`rank_agreement` over the pairs with both values finite (a diverged training has no accuracy)."""
    kept = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if len(kept) < 3:
        nan = Interval(math.nan, math.nan, math.nan)
        return Agreement(len(kept), nan, nan, nan, fraction=0.1)
    with warnings.catch_warnings():  # a bootstrap sample of ties: no correlation, which rank_agreement counts as 0
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return rank_agreement([a for a, _ in kept], [b for _, b in kept], seed=seed, n_boot=n_boot)


def _dominators(networks: Sequence[ValidatedNetwork], me: ValidatedNetwork) -> tuple[int, ...]:
    """Trials at least as accurate after longer training and at least as fast as ``me``, better in one (front only)."""
    if not me.on_front:
        return ()
    return tuple(
        n.trial
        for n in networks
        if n is not me
        and n.longer >= me.longer
        and n.latency_ms <= me.latency_ms
        and (n.longer > me.longer or n.latency_ms < me.latency_ms)
    )


def _render(v: Validation, heading: str) -> str:
    n_front = len(v.front)
    kept = sum(not n.dominated_by for n in v.front)
    dominated = "; ".join(
        f"trial {n.trial} (by {', '.join(map(str, n.dominated_by))})" for n in v.front if n.dominated_by
    )
    lines = [
        f"{heading} Validation of study {md_code(v.study)}: {v.longer.epochs} epochs\n",
        f"{len(v.networks)} networks ({n_front} on the Pareto front, {len(v.networks) - n_front} random other complete "
        f"trials) retrained with the study's recipe at {v.longer.describe()}; the search trained {v.brief.describe()}. "
        f"The noise floor is the search's own budget rerun with seed {v.noise.seed}.\n",
        "| trial score against | Kendall τ [95 % interval] | Spearman ρ [95 % interval] |",
        "|---|---:|---:|",
        f"| accuracy after {v.longer.epochs} epochs | {v.agreement.tau} | {v.agreement.rho} |",
        f"| noise floor: the same budget, seed {v.noise.seed} | {v.noise_floor.tau} | {v.noise_floor.rho} |",
        "",
        "Intervals: percentile bootstrap over the networks. A τ near the noise floor's means the search's score ranks "
        "networks as the longer budget does, up to its own noise; a τ well below it means longer training reorders them.\n",
        f"Front after longer training: **{kept} of {n_front}** front networks stay non-dominated on "
        f"({v.longer.epochs}-epoch accuracy ↑, latency ↓) among the retrained networks"
        + (f"; dominated: {dominated}.\n" if dominated else ".\n"),
        f"| trial | front | latency ms | params | score | {v.longer.epochs}-epoch acc | rerun, seed {v.noise.seed} "
        "| non-dominated | blocks |",
        "|---:|:---:|---:|---:|---:|---:|---:|:---:|---|",
    ]
    for n in sorted(v.networks, key=lambda n: (n.latency_ms, n.trial)):
        kept_mark = ("yes" if not n.dominated_by else "no") if n.on_front else ""
        lines.append(
            f"| {n.trial} | {'yes' if n.on_front else ''} | {_num(n.latency_ms, '.3f')} | {n.params:,} | "
            f"{_num(n.score, '.4f')} | {_num(n.longer, '.4f')} | {_num(n.noise, '.4f')} | {kept_mark} | "
            f"{md_text(n.label)} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: float, fmt: str) -> str:
    return "—" if math.isnan(value) else format(value, fmt)
