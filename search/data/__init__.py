"""Datasets: configs, sources (digits, synthetic, idx/Fashion-MNIST, image folders, CIFAR) and in-memory splits.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import fetch, idx, preprocessing, sources, splits
from .fetch import *  # noqa: F403
from .idx import *  # noqa: F403
from .preprocessing import *  # noqa: F403
from .sources import *  # noqa: F403
from .splits import *  # noqa: F403

__all__ = [*fetch.__all__, *idx.__all__, *preprocessing.__all__, *sources.__all__, *splits.__all__]
