"""The unsubscribe footer every marketing email carries, in its HTML and its text part."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import escape

from worker.kit.problems import Problem
from worker.rendering.errors import RenderError

_FOOTER_HTML = (
    '<p style="margin:24px 0 0;font-size:12px;line-height:18px;color:#6b7280;'
    'text-align:center">You are receiving this because you signed up for updates from us. '
    '<a href="{url}" style="color:#6b7280">Unsubscribe</a></p>'
)


def unsubscribe_url(values: Mapping[str, Any], path: Path) -> str:
    """The context's `unsubscribe_url`, or RenderError at the top of the template at `path`."""
    url = values.get("unsubscribe_url")
    if isinstance(url, str) and url:
        return url
    message = "a marketing email needs `unsubscribe_url` in the context (or `transactional: true`)"
    raise RenderError(Problem(path, 1, 1, message))


def with_html_footer(html: str, url: str) -> str:
    """Add the unsubscribe footer unless the HTML already carries the link."""
    escaped = str(escape(url))
    if url in html or escaped in html:
        return html
    footer = _FOOTER_HTML.format(url=escaped)
    at = html.lower().rfind("</body>")
    if at < 0:
        return f"{html.rstrip()}\n{footer}\n"
    return f"{html[:at]}{footer}\n{html[at:]}"


def with_text_footer(text: str, url: str) -> str:
    """Add the unsubscribe line unless the text already carries the link."""
    if url in text:
        return text
    return f"{text}\n\nUnsubscribe: {url}" if text else f"Unsubscribe: {url}"
