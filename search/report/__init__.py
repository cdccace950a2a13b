"""Reports: data, HTML, plots, the terminal summary and the writer.

Every public name of the subpackage's modules (each module's ``__all__``), listed once, there.
"""

from __future__ import annotations

from . import answer, data, html, plots, proxies, text, validation, writer
from .answer import *  # noqa: F403
from .data import *  # noqa: F403
from .html import *  # noqa: F403
from .plots import *  # noqa: F403
from .proxies import *  # noqa: F403
from .text import *  # noqa: F403
from .validation import *  # noqa: F403
from .writer import *  # noqa: F403

__all__ = [
    *answer.__all__,
    *data.__all__,
    *html.__all__,
    *plots.__all__,
    *proxies.__all__,
    *text.__all__,
    *validation.__all__,
    *writer.__all__,
]
