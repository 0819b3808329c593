"""Who is asking: the session cookie read on every console request, the role checked against
what the route needs, and every state-changing request refused when it comes from another
site. A refusal is an `Interrupted` answer (a redirect or an HTML page, rendered by
worker/console/app.py), so nothing of the route runs and nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request

from worker.accounts.access import renewed_cookie, session_user
from worker.accounts.roles import Permission, Role, allows, roles_allowed
from worker.runtime.process import Runtime

COOKIE = "nurture_session"
PATH = "/console"
LOGIN = "/console/login"
PASSWORD = "/console/password"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ENDED = "Your session has ended; sign in again"
CROSS_SITE = "Refused: this form was posted from another site, so nothing was changed."


@dataclass(frozen=True)
class Signed:
    name: str
    role: Role
    must_change_password: bool

    @property
    def actor(self) -> str:
        """How the audit log names this person."""
        return f"user:{self.name}"

    def can(self, permission: Permission) -> bool:
        return allows(self.role, permission)


class Interrupted(Exception):
    """A console request answered before its route runs: a redirect (`location`), or a page
    with `status_code` and `message`."""

    def __init__(
        self,
        status_code: int,
        message: str = "",
        *,
        location: str | None = None,
        signed: Signed | None = None,
        end_session: bool = False,
    ) -> None:
        super().__init__(message or location or str(status_code))
        self.status_code = status_code
        self.message = message
        self.location = location
        self.signed = signed
        self.end_session = end_session


def console_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime_factory()
    return runtime


ConsoleRuntime = Annotated[Runtime, Depends(console_runtime)]


def secure_cookie(runtime: Runtime) -> bool:
    return runtime.config.public_url.lower().startswith("https://")


def signed_in(request: Request) -> Signed:
    """The person signed in. Without a good session a GET goes to the sign-in page (and back
    here after), anything else is a 401; a person who must change their password is sent to
    do it first."""
    runtime = console_runtime(request)
    cookie = request.cookies.get(COOKIE)
    user = session_user(runtime.database, runtime.config, cookie)
    if user is None:
        message = ENDED if cookie else "Sign in first"
        if request.method in SAFE_METHODS:
            target = LOGIN + "?next=" + quote(_here(request), safe="")
            if cookie:
                target += "&ended=1"
            raise Interrupted(303, location=target, end_session=bool(cookie))
        raise Interrupted(401, message, end_session=bool(cookie))
    signed = Signed(user.name, user.role, user.must_change_password)
    request.state.signed = signed
    request.state.session_cookie = renewed_cookie(runtime.config, user)
    if signed.must_change_password and request.url.path not in (PASSWORD, "/console/logout"):
        raise Interrupted(303, location=PASSWORD, signed=signed)
    return signed


SignedDep = Annotated[Signed, Depends(signed_in)]


def allowed(permission: Permission) -> Callable[..., Signed]:
    """A dependency: the person signed in, when their role allows `permission`; else 403."""

    def check(signed: SignedDep) -> Signed:
        if not signed.can(permission):
            needed = " or ".join(role.value for role in roles_allowed(permission))
            raise Interrupted(
                403,
                f"You are signed in as {signed.name} ({signed.role.value}); "
                f"this needs {needed}. Nothing was changed.",
                signed=signed,
            )
        return signed

    return check


def same_origin(request: Request) -> None:
    """Refuse a state-changing request another site made the browser send (Datasette's check):
    `Sec-Fetch-Site` says cross-site or same-site, or an `Origin` is neither this server's
    public URL nor the host the request was sent to."""
    if request.method in SAFE_METHODS:
        return
    site = request.headers.get("sec-fetch-site", "").lower()
    if site in ("cross-site", "same-site"):
        raise Interrupted(403, CROSS_SITE)
    origin = request.headers.get("origin")
    if origin is None:
        return
    runtime = console_runtime(request)
    host = request.headers.get("host", "")
    ours = {_origin(runtime.config.public_url), _origin(f"{request.url.scheme}://{host}")}
    if _origin(origin) not in ours:
        raise Interrupted(403, CROSS_SITE)


def _origin(url: str) -> str:
    """scheme://host[:port] in lower case, without a default port; "" for anything else."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    default = 443 if parts.scheme == "https" else 80
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _here(request: Request) -> str:
    path = request.url.path
    return path + ("?" + request.url.query if request.url.query else "")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path on this server, else the console."""
    if not target or not target.startswith(PATH) or target.startswith("//"):
        return PATH
    if "\\" in target or any(ord(c) < 32 for c in target):
        return PATH
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return PATH
    return target
