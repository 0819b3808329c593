"""The console's router: sign-in, the operations page and the leads, under `/console`, every
state-changing request checked for its origin first; and the answer to an `Interrupted`
request (a redirect, or the page that says why)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from worker.console import lead_forms, leads, operations, signin
from worker.console.auth import Interrupted, same_origin
from worker.console.pages import STATIC, end_session, page, secure

router = APIRouter(prefix="/console", dependencies=[Depends(same_origin)], include_in_schema=False)
router.include_router(signin.router)
router.include_router(operations.router)
router.include_router(leads.router)
router.include_router(leads.router)
router.include_router(lead_forms.router)

HEADINGS = {401: "Sign in first", 403: "Not allowed", 404: "Not found"}


@router.get("")
@router.get("/")
def console_home() -> Response:
    """The console opens on the leads."""
    return secure(RedirectResponse("/console/leads", status_code=303))


def interrupted(request: Request, exc: Exception) -> Response:
    """The answer of a request a console dependency stopped."""
    assert isinstance(exc, Interrupted)
    response: Response
    if exc.location is not None:
        response = secure(RedirectResponse(exc.location, status_code=exc.status_code))
    else:
        heading = HEADINGS.get(exc.status_code, "Refused")
        response = page(
            request, "forbidden.html", exc.signed, status_code=exc.status_code,
            message=exc.message, heading=heading, sign_in=exc.status_code == 401,
        )  # fmt: skip
    if exc.end_session:
        end_session(request, response)
    return response


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)


def install(app: FastAPI) -> None:
    """Serve the console from `app`: its pages, its stylesheet, its refusals."""
    app.include_router(router)
    app.mount("/console/static", static_files(), name="console-static")
    app.add_exception_handler(Interrupted, interrupted)
