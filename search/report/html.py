"""Markdown → one self-contained HTML file: images inlined as base64 PNG, CSS inline, no scripts.

The HTML report is the Markdown summary rendered (markdown-it, a dependency of rich), so the
two never disagree; only the image sources change, from file names to ``data:`` URIs, and only
for the files the caller lists (the figures it wrote). Each Markdown section becomes a
``<section id=…>``, linked from a table of contents.
"""

from __future__ import annotations

import base64
import html
import logging
import mimetypes
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

__all__ = ["markdown_to_html", "render_markdown"]

log = logging.getLogger(__name__)

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .88rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; }
th { background: #f5f5f5; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
code { background: #f3f3f3; padding: 0 .2rem; border-radius: 3px; }
nav { background: #f7f7f7; padding: .4rem 1rem; border-radius: 4px; font-size: .9rem; }
nav a { margin-right: 1rem; }
blockquote { margin: .5rem 0; padding: .2rem 1rem; border-left: 4px solid #e0a000; background: #fff8e5; }
"""


def _parser() -> MarkdownIt:
    # Raw HTML off: names and values from the study are shown as text, never interpreted.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline_images(tokens: list[Token], images: Mapping[str, Path]) -> None:
    """Point each image named in ``images`` at a ``data:`` URI of its file; any other image becomes its alt text.

    Only the figures the report wrote are listed, so no text can make the report read
    (and publish) a file it names, nor make a reader's browser fetch one.
    """
    for token in tokens:
        for child in token.children or ():
            if child.type != "image":
                continue
            src = str(child.attrGet("src") or "")
            path = images.get(src)
            if path is None or not path.is_file():
                log.warning("report image %r is not a figure of this report; shown as its alt text", src)
                child.type, child.tag, child.attrs, child.children = "text", "", {}, None
                continue
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            child.attrSet("src", f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}")


def render_markdown(text: str, *, images: Mapping[str, Path] | None = None) -> str:
    """Markdown (with tables) to an HTML fragment; ``images`` (name in the Markdown → file) are inlined."""
    md = _parser()
    tokens = md.parse(text)
    _inline_images(tokens, images or {})
    return str(md.renderer.render(tokens, md.options, {}))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _heading(section: str) -> str:
    """The section's first heading, without its ``#`` marks."""
    match = re.search(r"^#{1,6} +(.+)$", section, flags=re.MULTILINE)
    return match.group(1).strip() if match else "section"


def markdown_to_html(sections: Sequence[str], *, title: str, images: Mapping[str, Path] | None = None) -> str:
    """A complete, self-contained HTML page: one ``<section>`` per Markdown section, a contents bar after the first.

    ``images`` maps the image names the sections use to the files to inline; no other file is read.
    """
    ids = [_slug(_heading(s).replace("`", "")) for s in sections]
    parts = []
    for i, (section, sid) in enumerate(zip(sections, ids)):
        parts.append(f"<section id='{sid}'>\n{render_markdown(section, images=images)}</section>\n")
        if i == 0 and len(sections) > 1:
            links = " ".join(
                f"<a href='#{sid}'>{html.escape(_heading(s).replace('`', ''))}</a>"
                for s, sid in zip(sections[1:], ids[1:])
            )
            parts.append(f"<nav>{links}</nav>\n")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{''.join(parts)}</body>\n</html>\n"
    )
