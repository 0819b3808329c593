"""Click and open tracking for emails: signed links and the pixel (SPEC §3).

Pure: no database. A click link carries the step run, the lead and the destination, signed
with the secret key, so the redirect can only ever go where the email pointed (no open
redirect); an open link carries the step run and the lead. The API (`worker/api/public.py`)
verifies both and records `email_clicked` / `email_opened`.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from worker.kit.signing import sign, verify

if TYPE_CHECKING:
    from worker.config import Settings
    from worker.definitions.models import Tracking
    from worker.sending.compose import Composed

# an opening <a …> tag, and in it an href attribute in double, single or no quotes
_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(
    r"""(?P<lead>\shref\s*=\s*)(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s>"']+))""",
    re.IGNORECASE,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_WEB = re.compile(r"^https?://", re.IGNORECASE)

OPEN, CLICK = "o", "c"


def rewrite_html(
    html: str, make_click_url: Callable[[str], str], *, keep: Callable[[str], bool] | None = None
) -> str:
    """Every `<a href="http(s)://…">` pointed through `make_click_url`; `mailto:`, `tel:`,
    `#anchors`, relative links and any link `keep` accepts (the unsubscribe link) stay as they
    are."""

    def anchor(tag: re.Match[str]) -> str:
        return _HREF.sub(lambda href: _href(href, make_click_url, keep), tag.group(0), count=1)

    return _ANCHOR.sub(anchor, html)


def _href(
    found: re.Match[str], make_click_url: Callable[[str], str], keep: Callable[[str], bool] | None
) -> str:
    raw = found.group("dq") if found.group("dq") is not None else found.group("sq")
    raw = raw if raw is not None else found.group("bare")
    # attribute values are HTML-escaped (`&amp;` in query strings): sign the real URL
    url = html_lib.unescape(raw).strip()
    if not _WEB.match(url) or (keep is not None and keep(url)):
        return found.group(0)
    return f'{found.group("lead")}"{html_lib.escape(make_click_url(url), quote=True)}"'


def add_pixel(html: str, url: str) -> str:
    """A 1×1 image just before the last `</body>` (at the end when there is none)."""
    pixel = (
        f'<img src="{html_lib.escape(url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;border:0;width:1px;height:1px;overflow:hidden">'
    )
    ends = list(_BODY_END.finditer(html))
    if not ends:
        return html + pixel
    at = ends[-1].start()
    return html[:at] + pixel + html[at:]


# -- signed links ------------------------------------------------------------------------------


def _base(config: Settings) -> str:
    return config.public_url.rstrip("/")


def open_url(config: Settings, step_run_id: str, lead_id: str) -> str:
    token = sign(config, {"k": OPEN, "r": step_run_id, "l": lead_id})
    return f"{_base(config)}/t/o/{token}.gif"


def click_url(config: Settings, step_run_id: str, lead_id: str, url: str) -> str:
    token = sign(config, {"k": CLICK, "r": step_run_id, "l": lead_id, "u": url})
    return f"{_base(config)}/t/c/{token}"


def read_token(config: Settings, token: str, kind: str) -> dict[str, str] | None:
    """The payload of a valid tracking token of this kind; None for anything forged, of
    another kind (an unsubscribe token is not a click token) or missing a field."""
    data = verify(config, token)
    if data is None or data.get("k") != kind:
        return None
    needed = ("r", "l", "u") if kind == CLICK else ("r", "l")
    if not all(isinstance(data.get(name), str) and data.get(name) for name in needed):
        return None
    if kind == CLICK and not _WEB.match(data["u"]):
        return None  # only web links are ever signed; refuse anything else all the same
    return data


# -- at send time --------------------------------------------------------------------------------


def enabled(config: Settings, tracking: Tracking | None) -> tuple[bool, bool]:
    """(opens, clicks): NURTURE_TRACKING=off switches both off; else the sequence decides
    (both on when it says nothing)."""
    if config.tracking == "off":
        return False, False
    if tracking is None:
        return True, True
    return tracking.opens, tracking.clicks


def track_html(
    config: Settings,
    tracking: Tracking | None,
    html: str,
    *,
    step_run_id: str,
    lead_id: str,
) -> str:
    """The email's HTML with tracked links and the pixel, as far as tracking is on."""
    opens, clicks = enabled(config, tracking)
    if clicks:
        unsubscribe_prefix = f"{_base(config)}/u/"
        html = rewrite_html(
            html,
            lambda url: click_url(config, step_run_id, lead_id, url),
            keep=lambda url: url.startswith(unsubscribe_prefix),
        )
    if opens:
        html = add_pixel(html, open_url(config, step_run_id, lead_id))
    return html


def track(
    config: Settings,
    tracking: Tracking | None,
    composed: Composed,
    *,
    step_run_id: str,
    lead_id: str,
) -> Composed:
    """A composed marketing email with tracking applied; anything else unchanged. Internal
    alerts (`notify`) are never tracked; the plain-text part keeps its links as they are."""
    if composed.channel != "email" or composed.email is None:
        return composed
    tracked = track_html(
        config, tracking, composed.email.html, step_run_id=step_run_id, lead_id=lead_id
    )
    return replace(composed, email=replace(composed.email, html=tracked))
