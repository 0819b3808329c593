"""The pages people reach from a message, without a bearer token: unsubscribe, the open
pixel and the click redirect (SPEC §3, §4). Every link is signed (`worker/kit/signing.py`); a forged
or altered one gets a 404 and writes nothing.

Unsubscribe follows RFC 8058: GET only shows a page (link scanners fetch links), POST
unsubscribes — the page's button, or a mail client's one-click `List-Unsubscribe=One-Click`.
Changes are events (`unsubscribed` / `resubscribed` with `properties.channel`), applied by
`worker/support/subscriptions.py` with an idempotency key numbered by the lead's earlier
changes: a repeated or concurrent POST is a duplicate, a later change of mind is not.
"""

from __future__ import annotations

import hashlib
import html
import logging
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from worker.api.deps import ERRORS, RuntimeDep
from worker.ingest.engagement import record_engagement
from worker.kit.clock import utcnow
from worker.sending.tracking import CLICK, OPEN, read_token
from worker.support.subscriptions import LABELS, RESUBSCRIBABLE, Subscription, change, subscription

router = APIRouter(tags=["public"])
log = logging.getLogger(__name__)

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
"""A 1×1 transparent GIF."""
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
PAGE_HEADERS = {
    **NO_CACHE,
    # the token in the URL must not leak to other sites, nor the page be framed or indexed
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


# -- pages ----------------------------------------------------------------------------------------


def page(title: str, message: str, form: tuple[str, str] | None = None, status: int = 200) -> Any:
    """A plain, accessible page: a heading, a paragraph, at most one button that POSTs back
    to the same URL."""
    button = ""
    if form is not None:
        action, label = form
        button = (
            '<form method="post">'
            f'<input type="hidden" name="action" value="{html.escape(action)}">'
            f'<button type="submit">{html.escape(label, quote=False)}</button></form>'
        )
    body = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{html.escape(title, quote=False)}</title>"
        "<style>body{font:1.05rem/1.5 system-ui,sans-serif;max-width:34rem;margin:3rem auto;"
        "padding:0 1rem;color:#1a1a1a;background:#fff}"
        "button{font:inherit;padding:.6rem 1.2rem;border:2px solid #1a1a1a;border-radius:.3rem;"
        "background:#1a1a1a;color:#fff;cursor:pointer}"
        "button:focus-visible{outline:3px solid #0a58ca;outline-offset:2px}</style>"
        f"</head><body><main><h1>{html.escape(title, quote=False)}</h1>"
        f"<p>{html.escape(message, quote=False)}</p>"
        f"{button}</main></body></html>\n"
    )
    return HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)


def not_found() -> Any:
    return page(
        "This link does not work",
        "The link is incomplete or was changed. Use the link from the message itself.",
        status=404,
    )


def masked(address: str | None) -> str:
    """Enough of the address to recognise it, not enough to learn it from a forwarded link."""
    if not address:
        return ""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    return f"•••{address[-4:]}"


def _to(found: Subscription) -> str:
    shown = masked(found.address)
    return f" to {shown}" if shown else ""


def state_page(found: Subscription, changed: str | None = None) -> Any:
    """The page for where the lead stands (subscribed, unsubscribed, or stopped for another
    reason), worded for what this request just changed."""
    label = LABELS.get(found.channel, "messages")
    if found.erased:
        return page("You're unsubscribed", f"We no longer hold your details or send you {label}.")
    if found.suppressed is None:
        if changed == "resubscribed":
            return page(
                "You're subscribed again",
                f"You'll get our {label}{_to(found)} again.",
                ("unsubscribe", "Unsubscribe"),
            )
        return page(
            f"Unsubscribe from our {label}?",
            f"Press the button and we stop sending you marketing {label}{_to(found)}.",
            ("unsubscribe", "Unsubscribe"),
        )
    if found.suppressed in RESUBSCRIBABLE:
        return page(
            "You're unsubscribed",
            f"You're unsubscribed from our {label}{_to(found)}. Changed your mind?",
            ("resubscribe", "Resubscribe"),
        )
    return page(
        "You're unsubscribed",
        f"We don't send {label}{_to(found)}: earlier messages could not be delivered or were "
        "refused. Contact us if you want them again.",
    )


# -- unsubscribe --------------------------------------------------------------------------------


def wants_resubscribe(content_type: str | None, body: bytes) -> bool:
    """Only the page's own form asks to resubscribe (`action=resubscribe`, form-encoded).
    Anything else POSTed here unsubscribes: RFC 8058 one-click bodies come form-encoded or as
    multipart, and a mail client must never be able to resubscribe anyone."""
    if not (content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        return False
    fields = parse_qs(body.decode("utf-8", "replace"))
    return fields.get("action") == ["resubscribe"]


HTML_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"description": "a page for the person", "content": {"text/html": {}}},
    404: {"description": "a forged or altered link", "content": {"text/html": {}}},
}


@router.get(
    "/u/{token}", response_class=HTMLResponse, summary="Unsubscribe page", responses=HTML_PAGE
)
def unsubscribe_page(token: str, runtime: RuntimeDep) -> Any:
    """Where the lead stands, with one button: Unsubscribe or Resubscribe. Changes nothing."""
    found = subscription(runtime, token)
    return not_found() if found is None else state_page(found)


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe (RFC 8058)",
    responses={**HTML_PAGE, 413: ERRORS[413]},
)
async def unsubscribe(token: str, request: Request, runtime: RuntimeDep) -> Any:
    """Unsubscribe: the page's button or a one-click `List-Unsubscribe=One-Click` POST.
    `action=resubscribe` resubscribes. Repeating changes nothing."""
    body = await request.body()
    resubscribe = wants_resubscribe(request.headers.get("content-type"), body)
    found, changed = await run_in_threadpool(change, runtime, token, resubscribe)
    return not_found() if found is None else state_page(found, changed)


# -- tracking -----------------------------------------------------------------------------------


def _safely(action: Any, *args: Any) -> None:
    # the person must get their image or their page even when recording fails
    try:
        action(*args)
    except Exception:
        log.exception("could not record a tracking event")


@router.get(
    "/t/o/{token}.gif",
    response_class=Response,
    summary="Open pixel",
    responses={
        200: {"description": "a 1×1 transparent GIF", "content": {"image/gif": {}}},
        404: {"description": "a forged or altered link"},
    },
)
def opened(token: str, runtime: RuntimeDep) -> Response:
    """A 1×1 transparent GIF; records `email_opened` once per message."""
    data = read_token(runtime.config, token, OPEN)
    if data is None:
        return Response(status_code=404, headers=NO_CACHE)
    key = f"nurture:open:{data['r']}"
    _safely(record_engagement, runtime, data, "email_opened", key, {})
    return Response(PIXEL, media_type="image/gif", headers=NO_CACHE)


@router.get(
    "/t/c/{token}",
    response_class=RedirectResponse,
    status_code=302,
    summary="Click",
    responses={
        302: {"description": "to the link signed into the token"},
        404: HTML_PAGE[404],
    },
)
def clicked(token: str, runtime: RuntimeDep) -> Any:
    """302 to the link signed into the token, never anywhere else; records `email_clicked`.
    Clicks of one link within the same minute count once (scanners fetch twice)."""
    data = read_token(runtime.config, token, CLICK)
    if data is None:
        return not_found()
    minute = int(utcnow().timestamp() // 60)
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    key = f"nurture:click:{digest}:{minute}"
    _safely(record_engagement, runtime, data, "email_clicked", key, {"url": data["u"]})
    return RedirectResponse(data["u"], status_code=302, headers=NO_CACHE)
