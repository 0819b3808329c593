"""Rendering console pages: Jinja2 templates (autoescaped) that extend base.html, and the
headers every page carries — a strict Content-Security-Policy, no sniffing, no caching,
no referrer outside — with the session cookie renewed on each page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader

from worker.console.auth import COOKIE, PATH, Signed, console_runtime, secure_cookie

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
SESSION_SECONDS = 12 * 3600


def when(value: datetime | None) -> str:
    """A time as the console shows it: UTC, to the minute."""
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def duration(seconds: float | None) -> str:
    """How long, in the largest unit or two that say it: 45 s, 3 min, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return "–"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if whole < 3600:
        return f"{minutes} min"
    if whole < 86400:
        rest = minutes % 60
        return f"{hours} h" + (f" {rest} min" if rest else "")
    rest = hours % 24
    return f"{days} d" + (f" {rest} h" if rest else "")


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["when"] = when
    env.filters["duration"] = duration
    return env


templates = Jinja2Templates(env=_environment())


def page(
    request: Request,
    name: str,
    signed: Signed | None,
    *,
    status_code: int = 200,
    message: str | None = None,
    **context: Any,
) -> HTMLResponse:
    """The template `name` (extending base.html) for `signed`, with the console's headers;
    `message` is shown at the top (an error when the status is 4xx)."""
    values = {"signed": signed, "message": message, "error": status_code >= 400, **context}
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    secure(response)
    renew(request, response)
    return response


def secure(response: Response) -> Response:
    """The console's security headers on any response."""
    response.headers.update(SECURITY_HEADERS)
    return response


def see_other(request: Request, location: str) -> RedirectResponse:
    """303 to another console page (after a POST), renewing the session."""
    response = RedirectResponse(location, status_code=303)
    secure(response)
    renew(request, response)
    return response


def renew(request: Request, response: Response) -> None:
    """Set the cookie `signed_in` renewed, if it ran: a session lasts 12 h from the last page."""
    cookie = getattr(request.state, "session_cookie", None)
    if cookie:
        set_session_cookie(request, response, cookie)


def set_session_cookie(request: Request, response: Response, cookie: str) -> None:
    response.set_cookie(
        COOKIE,
        cookie,
        max_age=SESSION_SECONDS,
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=secure_cookie(console_runtime(request)),
    )


def end_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=secure_cookie(console_runtime(request)),
    )
