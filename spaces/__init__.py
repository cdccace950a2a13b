"""Search spaces: YAML lists of choices, sampled define-by-run by Optuna into ``ArchConfig``.

``SearchSpace.load("mobile32")`` reads a shipped space; ``space.sample(trial)`` returns
an architecture; ``space.size()`` and ``space.grid()`` count and enumerate it.
"""

from __future__ import annotations

from .choices import block_uses
from .space import SHIPPED_DIR, SearchSpace, list_spaces

__all__ = ["SHIPPED_DIR", "SearchSpace", "block_uses", "list_spaces"]
