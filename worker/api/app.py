"""The FastAPI app: events, support endpoints, health, and the console (/console). Webhooks
build on the same pieces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from worker import console
from worker.api import crm, events, leads, metrics, operator, public, webhooks
from worker.api.deps import BodyLimit, install_error_handlers
from worker.runtime.process import Runtime, current


def create_app(runtime_factory: Callable[[], Runtime] = current) -> FastAPI:
    app = FastAPI(
        title="Nurture",
        version="0.1.0",
        description="Lead-nurture sequences as code: events in, drip steps out.",
    )
    app.state.runtime_factory = runtime_factory
    app.add_middleware(BodyLimit)
    install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(leads.router)
    app.include_router(webhooks.router)
    app.include_router(crm.router)
    app.include_router(operator.router)
    app.include_router(public.router)
    app.include_router(metrics.router)
    console.install(app)  # /console: the router, /console/static, its refusal pages

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> Any:
        try:
            with runtime_factory().database.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # readiness reports any failure as not ready
            return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
        return {"status": "ok", "database": "ok"}

    return app
