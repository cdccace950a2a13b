"""Text from data (configs, tags, params, trial attributes) placed in Markdown as text, never as markup.

Whatever a value holds (``![x](/etc/passwd)``, ``<script>``, ``|`` or a newline), it renders
as the characters it is: an image, a link, raw HTML, an entity, emphasis or a table cell
break cannot come out of a value, in the Markdown file nor in the HTML made from it.
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = ["md_code", "md_link", "md_text"]

# What can open inline markup (CommonMark, GFM tables and strikethrough) or end a heading, each
# backslash-escaped, which CommonMark always honours: "[" opens links and images, "<" raw HTML and
# autolinks, "&" entities. A "_" between two letters or digits opens nothing and is kept, so
# names stay readable (``cpu_model``). Values go inside a line (after a label, in a table cell).
_SPECIAL = re.compile(r"[\\`*\[\]<&|~#]|(?<![^\W_])_|_(?![^\W_])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")  # a newline would end a table row or start a block
_LINK_SAFE = ":/?#@&=%,;~"  # kept in a link's destination; everything else is percent-encoded


def md_text(value: object) -> str:
    """``value`` as Markdown text inside a line, showing exactly its characters (control characters as spaces)."""
    return _SPECIAL.sub(lambda match: "\\" + match.group(0), _CONTROL.sub(" ", str(value)))


def md_code(value: object) -> str:
    """``value`` as a Markdown code span (literal inside, however many backticks it holds); not for table cells."""
    text = _CONTROL.sub(" ", str(value))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_link(text: object, url: str) -> str:
    """A Markdown link showing ``text`` and pointing at ``url``, neither able to break out of the link."""
    return f"[{md_text(text)}]({quote(_CONTROL.sub('', url), safe=_LINK_SAFE)})"
