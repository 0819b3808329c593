"""What every route shares: the runtime, bearer-token auth, uniform JSON errors, a body limit."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.kit.fields import field_errors, summary
from worker.runtime.process import Runtime

MAX_BODY = 1024 * 1024


class FieldError(BaseModel):
    field: str
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldError] | None = None


class ErrorResponse(BaseModel):
    """Every 4xx: what went wrong, and for bad input the fields that caused it."""

    error: ErrorDetail


def _described(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _described("a body that cannot be read as JSON or a form"),
    401: _described("missing or wrong bearer token"),
    413: _described("the body is over 1 MiB"),
    422: _described("bad input: `error.fields` names each field"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _described("no such lead or sequence")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _described("already enrolled")}


async def get_runtime(request: Request) -> Runtime:
    # async: a sync dependency would take a threadpool thread per request for nothing
    runtime: Runtime = request.app.state.runtime_factory()
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
_bearer = HTTPBearer(auto_error=False)


def api_tokens(runtime: Runtime) -> list[str]:
    """NURTURE_API_TOKENS, else the token `nurture run` keeps in its home folder."""
    if runtime.config.api_tokens:
        return [t.strip() for t in runtime.config.api_tokens.split(",") if t.strip()]
    path = runtime.config.home / "api_token"
    return [path.read_text().strip()] if path.exists() else []


async def require_token(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    given = credentials.credentials if credentials else ""
    if not given or not any(hmac.compare_digest(given, t) for t in api_tokens(runtime)):
        raise HTTPException(
            401,
            detail="a valid bearer token is required (Authorization: Bearer …)",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = Depends(require_token)


def error_body(message: str, *, code: str, fields: list[dict[str, str]] | None = None) -> Any:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = field_errors(exc.errors())
        body = error_body(summary(fields), code="invalid", fields=fields)
        return JSONResponse(body, status_code=422)

    # Starlette's class, so errors FastAPI raises itself (a body it cannot parse) look alike
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            409: "conflict",
            413: "too_large",
        }.get(exc.status_code, "error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            error_body(str(exc.detail), code=code),
            status_code=exc.status_code,
            headers=headers or None,
        )


def allowed_methods(request: Request) -> list[str]:
    """Every method any route serves for this path: one path can span several routers."""
    methods: set[str] = set()
    for route in request.app.routes:
        pattern = getattr(route, "path_regex", None)
        if pattern is not None and pattern.match(request.url.path):
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


class BodyLimit:
    """413 for a body over 1 MiB, whether or not it announces its length; nothing is read
    past the limit."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large(send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        response = JSONResponse(
            error_body("the body is over 1 MiB", code="too_large"), status_code=413
        )
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
