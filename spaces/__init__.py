"""Search spaces: YAML lists of choices, sampled define-by-run by Optuna into ``ArchConfig``.

``SearchSpace.load("mobile32")`` reads a shipped space; ``space.sample(trial)`` returns
an architecture; ``space.size()`` and ``space.grid()`` count and enumerate it.
"""

from __future__ import annotations

from .choices import BlockChoices, DepthRange, HeadChoices, StageChoices, StemChoices, block_uses
from .space import SHIPPED_DIR, Knob, SearchSpace, list_spaces

__all__ = [
    "SHIPPED_DIR",
    "BlockChoices",
    "DepthRange",
    "HeadChoices",
    "Knob",
    "SearchSpace",
    "StageChoices",
    "StemChoices",
    "block_uses",
    "list_spaces",
]
