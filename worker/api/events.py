"""POST /v1/events and /v1/events/batch (SPEC §4): idempotent on `id`, strict about input."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.api.deps import ERRORS, Authorized, RuntimeDep, error_body
from worker.ingest.early import queue_arrivals
from worker.ingest.intake import NotStored, apply_batch
from worker.ingest.pipes import pipes_for
from worker.ingest.schemas import EventIn
from worker.ingest.service import Arrival, Ingested, Queued
from worker.kit.fields import field_errors, summary
from worker.runtime.process import Runtime

router = APIRouter(prefix="/v1", dependencies=[Authorized], responses=ERRORS, tags=["events"])
BATCH_LIMIT = 1000


class EventResult(BaseModel):
    event_id: str
    lead_id: str
    duplicate: bool
    enrolled: list[str]
    exited: list[str]


class QueuedResult(BaseModel):
    """The early answer (`Prefer: respond-async`): the event is held durably and applied in
    arrival order; it will be stored under `event_id`."""

    event_id: str
    status: str = Field(examples=["queued"])
    duplicate: bool = False


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[dict[str, Any]] = Field(min_length=1, max_length=BATCH_LIMIT)


class ItemError(BaseModel):
    error: dict[str, Any]


class BatchResult(BaseModel):
    results: list[EventResult | QueuedResult | ItemError]


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


def queued_body(found: Queued) -> dict[str, Any]:
    return QueuedResult(
        event_id=found.event_id, status="queued", duplicate=found.duplicate
    ).model_dump(exclude_defaults=not found.duplicate)


def _item(found: Ingested | Queued | NotStored | Exception) -> Any:
    if isinstance(found, Queued):
        return queued_body(found)
    if isinstance(found, NotStored):
        return error_body(found.message, code="not_stored")
    if isinstance(found, Exception):
        return error_body(f"the event was not queued: {type(found).__name__}", code="not_stored")
    return result_of(found).model_dump()


def prefers_async(request: Request) -> bool:
    """`Prefer: respond-async` (RFC 7240), among other preferences or alone."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            if preference.split(";")[0].split("=")[0].strip().lower() == "respond-async":
                return True
    return False


async def take_event(request: Request, runtime: Runtime, event: EventIn, source: str) -> Any:
    """One event in: answered early (queued) when the caller prefers it or its source is set to
    be, else applied with whatever other events this process is applying (coalesced)."""
    pipes = pipes_for(runtime)
    asked = prefers_async(request)
    if not asked and source not in pipes.early_sources:
        applied = await pipes.apply.submit(Arrival(event, source))
        if isinstance(applied, Queued):  # a repeat of an event answered early, still queued
            return JSONResponse(queued_body(applied))
        return accepted(applied)
    found = await pipes.queue.submit(Arrival(event, source))
    headers = {"Preference-Applied": "respond-async"} if asked else None
    if isinstance(found, Ingested):  # a repeat of an event already applied
        return JSONResponse(result_of(found).model_dump(), headers=headers)
    if not found.duplicate:
        pipes.drainer.kick()
    return JSONResponse(queued_body(found), status_code=200 if found.duplicate else 202,
                        headers=headers)  # fmt: skip


@router.post(
    "/events",
    status_code=202,
    response_model=EventResult,
    responses={
        200: {
            "model": EventResult | QueuedResult,
            "description": "a repeated id: nothing changed (`status: queued` while its first "
            "copy waits in the intake)",
        },
        202: {
            "model": EventResult | QueuedResult,
            "description": "recorded; with `Prefer: respond-async`, queued durably",
        },
    },
)
async def post_event(event: EventIn, request: Request, runtime: RuntimeDep) -> Any:
    """Record one event: enrolls, exits, reacts, scores. A repeated `id` changes nothing.
    With `Prefer: respond-async` the answer comes as soon as the event is held durably:
    202 `{"event_id", "status": "queued"}`, applied right after in arrival order."""
    return await take_event(request, runtime, event, "api")


@router.post("/events/batch", status_code=207, response_model=BatchResult)
async def post_batch(batch: EventBatch, request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Up to 1,000 events, one result per item in order; a valid item is applied even when
    another item is invalid. With `Prefer: respond-async` each valid item is queued and
    answered `{"event_id", "status": "queued"}`."""
    asked = prefers_async(request)
    # validating 1,000 items takes a while: in a thread, not on the event loop
    results = await run_in_threadpool(batch_results, runtime, batch, early=asked)
    if asked:
        pipes_for(runtime).drainer.kick()
    headers = {"Preference-Applied": "respond-async"} if asked else None
    return JSONResponse({"results": results}, status_code=207, headers=headers)


def batch_results(runtime: Runtime, batch: EventBatch, *, early: bool) -> list[Any]:
    """Each item validated, the valid ones applied (or queued) together: a result per item."""
    results: list[Any] = []
    valid: list[tuple[int, EventIn]] = []
    for item in batch.events:
        try:
            valid.append((len(results), EventIn.model_validate(item)))
            results.append(None)
        except ValidationError as exc:
            fields = field_errors(exc.errors(), drop_prefix=())
            results.append(error_body(summary(fields), code="invalid", fields=fields))
    if not valid:
        return results
    events = [event for _, event in valid]
    if early:
        found: list[Any] = list(queue_arrivals(runtime, [Arrival(event) for event in events]))
    else:
        found = list(apply_batch(runtime, events))
    for (position, _), result in zip(valid, found, strict=True):
        results[position] = _item(result)
    return results
