"""The leads pages: `/console/leads` (the search), `/console/leads/{id}` (the lead page, its
timeline and, on request, the copy of one email), and `/console/messages/{id}/copy` (that copy
alone, for the sandboxed frame). Everyone signed in reads them; the forms that change a lead
are lead_forms.py's, which answer with `show_lead` when they refuse."""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from worker.accounts.roles import Permission
from worker.console.auth import ConsoleRuntime, Signed, SignedDep
from worker.console.pages import page
from worker.kit.clock import zone
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.support.copies import FRAME_POLICY, ShownCopy, email_copy, framed_html
from worker.support.search import search
from worker.support.timeline import lead_page

router = APIRouter()
TZ_COOKIE = "nurture_tz"
"""The viewer's time zone, once chosen on a lead page."""
COPY_HEADERS = {
    "Content-Security-Policy": FRAME_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
DONE = {
    "paused": "Paused. The steps listed under Resume wait until it is resumed.",
    "resumed": "Resumed: the remaining steps moved by the time paused.",
    "exited": "Exited: the scheduled steps were ended.",
    "enrolled": "Enrolled.",
    "unsubscribed": "Unsubscribed.",
    "resubscribed": "Resubscribed.",
    "unchanged": "Nothing to change: it already was so.",
    "erased": "The person was erased: only the lead's id and counts remain.",
}


@router.get("/leads")
def leads_page(
    request: Request, signed: SignedDep, runtime: ConsoleRuntime, q: str | None = None
) -> Response:
    """The search form and what it found; a blank or one-letter query is not looked up."""
    if q is None:
        return page(request, "leads.html", signed, title="Leads", query="", found=None,
                    region=runtime.config.default_region)  # fmt: skip
    found = search(runtime, q)
    return page(
        request, "leads.html", signed, title="Leads", query=found.query, found=found,
        message=found.message, status_code=422 if found.message else 200,
        region=runtime.config.default_region,
    )  # fmt: skip


@router.get("/leads/{lead_id}")
def lead(
    request: Request,
    lead_id: str,
    signed: SignedDep,
    runtime: ConsoleRuntime,
    tz: str = "",
    copy: str = "",
    part: str = "html",
    done: str = "",
) -> Response:
    """Everything about one lead; with `copy`, that email as it was sent (`part` html or
    text); with `tz`, times in that zone from now on."""
    response = show_lead(request, signed, runtime, lead_id, tz=tz, copy=copy, part=part,
                         message=DONE.get(done))  # fmt: skip
    if zone(tz) is not None and response.status_code == 200:
        response.set_cookie(TZ_COOKIE, tz, max_age=365 * 86400, path="/console", samesite="lax",
                            httponly=True)  # fmt: skip
    return response


@router.get("/messages/{message_id}/copy")
def message_copy(message_id: str, signed: SignedDep, runtime: ConsoleRuntime) -> Response:
    """The HTML of a sent email, for the lead page's sandboxed frame: no script runs and
    nothing loads (the open pixel, remote images), so showing it is never an open or a click."""
    try:
        shown = email_copy(runtime, message_id)
    except NotFound as exc:
        return HTMLResponse(f"<p>{escape(str(exc))}</p>", status_code=404, headers=COPY_HEADERS)
    return HTMLResponse(framed_html(shown.copy.html), headers=COPY_HEADERS)


def viewer_timezone(request: Request, runtime: Runtime, tz: str = "") -> str:
    """The zone the viewer reads times in: asked for, else chosen before, else the default."""
    for name in (tz, request.cookies.get(TZ_COOKIE, "")):
        if zone(name) is not None:
            return name
    return runtime.engine.default_timezone


def show_lead(
    request: Request,
    signed: Signed,
    runtime: Runtime,
    lead_id: str,
    *,
    tz: str = "",
    copy: str = "",
    part: str = "html",
    message: str | None = None,
    status_code: int = 200,
    form: dict[str, Any] | None = None,
) -> Response:
    """The lead page (`message` at the top), or the search page saying there is no such lead."""
    try:
        model = lead_page(runtime, lead_id, viewer_timezone(request, runtime, tz))
    except NotFound:
        return page(
            request, "leads.html", signed, title="No such lead", query="", found=None,
            message=f"No lead {lead_id[:32]!r}: search for it by email, phone, id or name.",
            status_code=404, region=runtime.config.default_region,
        )  # fmt: skip
    shown, copy_error = _copy(runtime, model.id, copy)
    return page(
        request, "lead.html", signed, title=model.name or model.email or model.id,
        message=message or copy_error, status_code=404 if copy_error else status_code,
        lead=model, copy=shown, part="text" if part == "text" else "html",
        can_act=signed.can(Permission.LEAD_ACT), can_export=signed.can(Permission.LEAD_EXPORT),
        can_erase=signed.can(Permission.ERASE), form=form or {},
        here=f"/console/leads/{quote(model.id, safe='')}",
    )  # fmt: skip


def _copy(runtime: Runtime, lead_id: str, message_id: str) -> tuple[ShownCopy | None, str | None]:
    if not message_id:
        return None, None
    try:
        shown = email_copy(runtime, message_id)
    except NotFound as exc:
        return None, str(exc)[:1].upper() + str(exc)[1:] + "."
    if shown.lead_id != lead_id:
        return None, f"Message {message_id} is not this lead's."
    return shown, None
