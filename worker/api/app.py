"""The FastAPI app. Health and readiness now; the events API and webhooks build on it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from worker.runtime import current


def create_app() -> FastAPI:
    app = FastAPI(title="Nurture", version="0.1.0")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> Any:
        try:
            with current().database.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:  # readiness reports any failure as not ready
            return JSONResponse({"status": "unavailable", "database": str(exc)}, status_code=503)
        return {"status": "ok", "database": "ok"}

    return app
