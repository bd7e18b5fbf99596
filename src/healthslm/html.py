"""Markdown -> one self-contained HTML page (images inlined), for the report and the comparison."""

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
_IMAGE = re.compile(r'<img src="([^"]+)"')


def _inline_images(body: str, base_dir: Path) -> str:
    """Replace local image paths by data: URIs so the page stands alone (no network, no files)."""

    def inline(match: re.Match) -> str:
        path = (base_dir / html.unescape(match.group(1))).resolve()
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img src="data:image/png;base64,{data}"'

    return _IMAGE.sub(inline, body)


def markdown_to_html(markdown: str, title: str, base_dir: Path) -> str:
    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{_inline_images(body, base_dir)}</body></html>\n"
    )
