"""POST /v1/events and /v1/events/batch (SPEC §4): idempotent on `id`, strict about input."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.api.deps import ERRORS, Authorized, RuntimeDep, error_body
from worker.ingest.intake import NotStored, apply, apply_batch
from worker.ingest.schemas import EventIn
from worker.ingest.service import Ingested
from worker.kit.fields import field_errors, summary

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


def result_of(found: Ingested) -> EventResult:
    return EventResult(
        event_id=found.event_id,
        lead_id=found.lead_id,
        duplicate=found.duplicate,
        enrolled=found.enrolled,
        exited=found.exited,
    )


def accepted(found: Ingested) -> JSONResponse:
    """202 for a recorded event, 200 for an id already recorded."""
    return JSONResponse(result_of(found).model_dump(), status_code=200 if found.duplicate else 202)


def _item(found: Ingested | NotStored) -> Any:
    if isinstance(found, NotStored):
        return error_body(found.message, code="not_stored")
    return result_of(found).model_dump()


@router.post(
    "/events",
    status_code=202,
    response_model=EventResult,
    responses={200: {"model": EventResult, "description": "a repeated id: nothing changed"}},
)
def post_event(event: EventIn, runtime: RuntimeDep) -> JSONResponse:
    """Record one event: enrolls, exits, reacts, scores. A repeated `id` changes nothing."""
    return accepted(apply(runtime, event))


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
            results.append(error_body(summary(fields), code="invalid", fields=fields))
    if valid:
        applied = apply_batch(runtime, [event for _, event in valid])
        for (position, _), result in zip(valid, applied, strict=True):
            results[position] = _item(result)
    return JSONResponse({"results": results}, status_code=207)
