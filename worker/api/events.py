"""POST /v1/events and /v1/events/batch (SPEC §4): idempotent on `id`, strict about input."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DataError, IntegrityError

from worker.api.deps import ERRORS, Authorized, RuntimeDep, error_body, field_errors
from worker.ingest.schemas import EventIn
from worker.ingest.service import Ingested, ingest, ingest_batch
from worker.runtime.process import Runtime
from worker.store.db import transaction

router = APIRouter(prefix="/v1", dependencies=[Authorized], responses=ERRORS, tags=["events"])
BATCH_LIMIT = 1000
log = logging.getLogger(__name__)


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


def apply_batch(runtime: Runtime, events: list[EventIn], *, source: str = "api") -> list[Any]:
    """Many events in one transaction, set-based; a result (or an error) per event in order.

    A concurrent insert of the same id or new lead fails the batch on a unique key: it is
    tried again and finds what the other wrote. A batch that still fails, for whatever reason,
    is applied event by event (`apply`), so one event the database refuses costs only its own
    result, never the others'."""
    for attempt in range(2):
        try:
            with transaction(runtime.database) as session:
                found = ingest_batch(
                    session, runtime.engine, events, datetime.now(UTC), source=source
                )
            return [result_of(each).model_dump() for each in found]
        except IntegrityError:
            if attempt == 0:
                continue
            log.warning("a batch of %d events failed twice: applying them one by one", len(events))
        except Exception:
            log.exception("a batch of %d events failed: applying them one by one", len(events))
        break
    return [apply_or_error(runtime, event, source=source) for event in events]


def apply_or_error(runtime: Runtime, event: EventIn, *, source: str = "api") -> Any:
    try:
        return result_of(apply(runtime, event, source=source)).model_dump()
    except (IntegrityError, DataError) as exc:
        message = f"the database refused this event: {type(exc.orig).__name__}"
        return error_body(message, code="not_stored")


def result_of(found: Ingested) -> EventResult:
    return EventResult(
        event_id=found.event_id,
        lead_id=found.lead_id,
        duplicate=found.duplicate,
        enrolled=found.enrolled,
        exited=found.exited,
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
    valid: list[tuple[int, EventIn]] = []
    for item in batch.events:
        try:
            valid.append((len(results), EventIn.model_validate(item)))
            results.append(None)
        except ValidationError as exc:
            fields = field_errors(exc.errors(), drop_prefix=())
            message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
            results.append(error_body(message, code="invalid", fields=fields))
    if valid:
        applied = apply_batch(runtime, [event for _, event in valid])
        for (position, _), result in zip(valid, applied, strict=True):
            results[position] = result
    return JSONResponse({"results": results}, status_code=207)
