"""``ValidateConfig``: the study YAML's ``validate:`` block, the longer budget ``blocknas validate`` retrains at."""

from __future__ import annotations

from dataclasses import dataclass

from blocknas.blocks.schema import check_range
from blocknas.search.data.splits import MAX_SAMPLES
from blocknas.search.seeding import check_seed
from blocknas.search.training.brief import MAX_EPOCHS

from .pruning import MAX_TRIALS

__all__ = ["DEFAULT_EPOCHS_FACTOR", "DEFAULT_RANDOM", "MIN_VALIDATED", "ValidateConfig"]

DEFAULT_EPOCHS_FACTOR = 5
"""Longer budget when ``epochs`` is unset: this many times the study's ``train.epochs``."""
DEFAULT_RANDOM = 8
"""Random complete trials off the front retrained when ``random`` is unset (fewer if the study has fewer)."""
MIN_VALIDATED = 3
"""Fewest networks a rank correlation is computed over."""
MIN_BOOTSTRAP, MAX_BOOTSTRAP = 100, 100_000
"""Range of ``bootstrap``: fewer samples make the interval ends noise; each costs two rank correlations."""


@dataclass(frozen=True)
class ValidateConfig:
    """How ``blocknas validate`` checks a finished search against a longer training budget.

    Attributes:
        epochs: Epochs of the longer training (null: ``DEFAULT_EPOCHS_FACTOR`` × ``train.epochs``).
        train_images: Training images of the longer training (null: the study's ``data.max_train_samples``).
        random: Complete trials off the Pareto front retrained beside it (null: up to ``DEFAULT_RANDOM``;
            a number: exactly that many, an error when the study has fewer).
        seed: Seed of the choice of those trials and of the bootstrap intervals.
        bootstrap: Bootstrap samples of each 95 % interval.
    """

    epochs: int | None = None
    train_images: int | None = None
    random: int | None = None
    seed: int = 0
    bootstrap: int = 1000

    def __post_init__(self) -> None:
        for key, low, high in (("epochs", 1, MAX_EPOCHS), ("train_images", 1, MAX_SAMPLES), ("random", 0, MAX_TRIALS)):
            value = getattr(self, key)
            if value is not None:
                check_range(value, key, low, high, hint=" (or null for the default)")
        check_seed(self.seed)
        check_range(self.bootstrap, "bootstrap", MIN_BOOTSTRAP, MAX_BOOTSTRAP)
