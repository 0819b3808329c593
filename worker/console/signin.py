"""Signing in and out, and changing one's password: `/console/login`, `/console/logout`,
`/console/password`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from worker.accounts.access import SignInRefused, change_own_password, sign_in
from worker.accounts.passwords import MIN_LENGTH
from worker.accounts.users import AccountRefused, find_user
from worker.console.auth import (
    ENDED,
    LOGIN,
    PATH,
    ConsoleRuntime,
    SignedDep,
    safe_next,
)
from worker.console.pages import end_session, page, secure, see_other, set_session_cookie
from worker.kit.clock import utcnow

router = APIRouter()
Field = Annotated[str, Form()]


@router.get("/login")
def login_form(request: Request, next: str = "", ended: str = "", signed_out: str = "") -> Response:
    message = ENDED if ended else ("You are signed out." if signed_out else None)
    return page(
        request, "login.html", None, message=message, next=safe_next(next), typed_name="",
        status_code=200,
    )  # fmt: skip


@router.post("/login")
def login(
    request: Request,
    runtime: ConsoleRuntime,
    name: Field = "",
    password: Field = "",
    next: Field = "",
) -> Response:
    """Check the password (after the slow-down); a session cookie and on to `next`."""
    address = request.client.host if request.client else None
    try:
        signed = sign_in(runtime.database, runtime.config, name, password, address, utcnow())
    except SignInRefused as exc:
        return page(
            request, "login.html", None, status_code=exc.status_code, message=str(exc),
            next=safe_next(next), typed_name=name[:64],
        )  # fmt: skip
    target = "/console/password" if signed.user.must_change_password else safe_next(next)
    response = secure(RedirectResponse(target, status_code=303))
    set_session_cookie(request, response, signed.cookie)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = secure(RedirectResponse(LOGIN + "?signed_out=1", status_code=303))
    end_session(request, response)
    return response


@router.get("/password")
def password_form(request: Request, signed: SignedDep) -> Response:
    return _password_page(request, signed)


@router.post("/password")
def change_password(
    request: Request,
    signed: SignedDep,
    runtime: ConsoleRuntime,
    current: Field = "",
    new: Field = "",
    repeat: Field = "",
) -> Response:
    """A new password of the person's own; their other sessions end, this one goes on."""
    user = find_user(runtime.database, signed.name)
    if user is None:  # removed since the cookie was read
        return see_other(request, LOGIN + "?ended=1")
    try:
        changed = change_own_password(
            runtime.database, runtime.config, user, current or None, new, repeat
        )
    except AccountRefused as exc:
        return _password_page(request, signed, status_code=422, message=_sentence(exc))
    request.state.session_cookie = changed.cookie
    return see_other(request, PATH)


def _password_page(
    request: Request, signed: SignedDep, *, status_code: int = 200, message: str | None = None
) -> Response:
    return page(
        request, "password.html", signed, status_code=status_code, message=message,
        forced=signed.must_change_password, min_length=MIN_LENGTH,
    )  # fmt: skip


def _sentence(exc: AccountRefused) -> str:
    field = exc.field if exc.field != "password" else "new password"
    return f"{field.capitalize()}: {exc.detail}."
