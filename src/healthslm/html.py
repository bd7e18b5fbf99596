"""Markdown -> one self-contained HTML page (images inlined), for the report and the comparison.

The page cannot leak: raw HTML in the Markdown is shown as text, not rendered (text from datasets, model
outputs or judges reaches the report); an image is inlined only from a file in the page's own folder
(reports/ for the report) and any other image is dropped, so no local file and no remote URL gets in.
Callers pass untrusted text through `untrusted`, which also neutralises Markdown syntax (links, images)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; margin: 4px; vertical-align: top; }
code, pre { background: #f6f6f6; font-size: 12px; }
pre { padding: 8px; overflow-x: auto; }
.better { color: #18794e; } .worse { color: #c0362c; }
"""
_IMAGE = re.compile(r'<img src="([^"]*)"([^>]*)>')
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
# Our own collapsible sections (compare's full table), the one HTML the pages keep, after escaping
_DETAILS = re.compile(r"<p>&lt;details&gt;&lt;summary&gt;([^&<>]*)&lt;/summary&gt;</p>")
_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def untrusted(text: str) -> str:
    """Text from data or models as literal Markdown: every syntax character escaped, on one line."""
    return _MARKDOWN_SYNTAX.sub(r"\\\1", " ".join(str(text).split()))


def inline_code(text: str) -> str:
    """Untrusted text as a Markdown code span in a table cell (a code span renders nothing inside it)."""
    return "`" + " ".join(str(text).split()).replace("`", "'").replace("|", "\\|") + "`"


def _inline_images(body: str, base_dir: Path) -> str:
    """Replace images by data: URIs of files inside `base_dir`; drop every other image."""
    root = base_dir.resolve()

    def inline(match: re.Match) -> str:
        path = (root / html.unescape(match.group(1))).resolve()
        kind = IMAGE_TYPES.get(path.suffix.lower())
        if not (kind and path.is_relative_to(root) and path.is_file()):
            return f"<em>[image not shown: {html.escape(match.group(1))} is not a file of this report]</em>"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img src="data:{kind};base64,{data}"{match.group(2)}>'

    return _IMAGE.sub(inline, body)


def markdown_to_html(markdown: str, title: str, base_dir: Path) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    body = _DETAILS.sub(r"<details><summary>\1</summary>", body).replace(
        "<p>&lt;/details&gt;</p>", "</details>"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{_inline_images(body, base_dir)}</body></html>\n"
    )
