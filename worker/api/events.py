"""POST /v1/events and /v1/events/batch (SPEC §4): idempotent on `id`, strict about input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from worker.api.deps import ERRORS, Authorized, RuntimeDep, error_body, field_errors
from worker.ingest import Ingested, ingest
from worker.runtime import Runtime
from worker.schemas import EventIn
from worker.store.db import transaction

router = APIRouter(prefix="/v1", dependencies=[Authorized], responses=ERRORS, tags=["events"])
BATCH_LIMIT = 1000


class EventResult(BaseModel):
    event_id: str
    lead_id: str
    duplicate: bool
    enrolled: list[str]
    exited: list[str]


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(min_length=1, max_length=BATCH_LIMIT)


class ItemError(BaseModel):
    error: dict[str, Any]


class BatchResult(BaseModel):
    results: list[EventResult | ItemError]


def apply(runtime: Runtime, event: EventIn, *, source: str = "api") -> Ingested:
    """One event, one transaction. A concurrent insert of the same id or the same new lead
    loses on a unique key; the second try then finds what the first one wrote."""
    for attempt in range(3):
        try:
            with transaction(runtime.database) as session:
                return ingest(session, runtime.engine, event, datetime.now(UTC), source=source)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError  # pragma: no cover


def result_of(found: Ingested) -> EventResult:
    return EventResult(
        event_id=found.event_id,
        lead_id=found.lead_id,
        duplicate=found.duplicate,
        enrolled=[] if found.duplicate else found.enrolled,
        exited=[] if found.duplicate else found.exited,
    )


@router.post(
    "/events",
    status_code=202,
    response_model=EventResult,
    responses={200: {"model": EventResult, "description": "a repeated id: nothing changed"}},
)
def post_event(event: EventIn, runtime: RuntimeDep) -> JSONResponse:
    """Record one event: enrolls, exits, reacts, scores. A repeated `id` changes nothing."""
    found = apply(runtime, event)
    return JSONResponse(result_of(found).model_dump(), status_code=200 if found.duplicate else 202)


@router.post("/events/batch", status_code=207, response_model=BatchResult)
def post_batch(batch: EventBatch, runtime: RuntimeDep) -> JSONResponse:
    """Up to 1,000 events, one result per item in order; a valid item is applied even when
    another item is invalid."""
    results: list[Any] = []
    for item in batch.events:
        try:
            event = EventIn.model_validate(item)
        except ValidationError as exc:
            fields = field_errors(exc.errors(), drop_prefix=())
            message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
            results.append(error_body(message, code="invalid", fields=fields))
            continue
        results.append(result_of(apply(runtime, event)).model_dump())
    return JSONResponse({"results": results}, status_code=207)
