"""Support endpoints (SPEC §5): look a lead up, see everything, pause, resume, exit, enroll."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker.api.deps import ERRORS, NOT_FOUND, Authorized, ErrorResponse, RuntimeDep, error_body
from worker.api.events import BATCH_LIMIT, ItemError
from worker.engine.state import Outcome
from worker.ingest.schemas import AwareDatetime, LeadIn
from worker.kit.errors import Conflict, NotFound
from worker.kit.fields import field_errors, summary
from worker.store.db import transaction
from worker.store.leads import find_leads
from worker.support.enrollments import (
    InvalidField,
    ManualEnrollment,
    Refused,
    enroll_by_hand,
    enroll_each,
)
from worker.support.service import exit_lead, pause_lead, resume_lead
from worker.support.view import lead_view

router = APIRouter(prefix="/v1", dependencies=[Authorized], responses=ERRORS, tags=["support"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PauseRequest(Strict):
    sequence: str | None = None
    reason: str = Field(min_length=1, max_length=500)
    until: AwareDatetime | None = None
    by: str | None = Field(default=None, max_length=200)


class ResumeRequest(Strict):
    sequence: str | None = None


class ExitRequest(Strict):
    sequence: str | None = Field(
        default=None, max_length=100, description="the sequence to leave; absent: every one"
    )
    reason: str = Field(default="manual", max_length=200)


class EnrollRequest(Strict):
    lead: LeadIn
    sequence: str = Field(min_length=1, max_length=100)
    properties: dict[str, Any] = Field(
        default_factory=dict,
        description="what the enrolling event would carry: a keyed sequence needs its key "
        "(`enroll.key`), an anchored one its time (`anchor:`)",
    )

    def manual(self, idempotency_key: str | None) -> ManualEnrollment:
        return ManualEnrollment(self.lead, self.sequence, self.properties, idempotency_key)


class EnrollItem(EnrollRequest):
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class EnrollmentBatch(Strict):
    enrollments: list[dict[str, Any]] = Field(min_length=1, max_length=BATCH_LIMIT)


class EnrollmentOut(BaseModel):
    id: str
    sequence: str
    key: str | None
    status: str
    enrolled_at: str
    anchor_at: str


class TimelineEntry(BaseModel):
    at: str
    sequence: str | None
    step: str | None
    action: str
    reason: str | None


class Enrolled(BaseModel):
    lead_id: str
    enrollment: EnrollmentOut
    timeline: list[TimelineEntry]


class EnrollBatchResult(BaseModel):
    results: list[Enrolled | ItemError]


class Done(BaseModel):
    lead_id: str
    timeline: list[dict[str, Any]]


def _done(lead_id: str, outcome: Outcome) -> dict[str, Any]:
    entries = [
        {
            "at": e.at.isoformat(),
            "sequence": e.sequence,
            "step": e.step,
            "action": e.action,
            "reason": e.reason,
        }
        for e in outcome.entries
    ]
    return {"lead_id": lead_id, "timeline": entries}


@router.get("/leads")
def list_leads(
    request: Request,
    runtime: RuntimeDep,
    email: str | None = Query(default=None, max_length=320),
    phone: str | None = Query(default=None, max_length=32),
    external_id: str | None = Query(default=None, max_length=200),
) -> dict[str, list[dict[str, Any]]]:
    """Leads by email (case-insensitive), phone or external id; empty when none."""
    unknown = sorted(set(request.query_params) - {"email", "phone", "external_id"})
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": "unknown parameter", "type": "extra_forbidden"}
                for name in unknown
            ]
        )
    for name in ("email", "phone", "external_id"):
        if len(request.query_params.getlist(name)) > 1:
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": f"give {name} once", "type": "value_error"}]
            )
    if not (email or phone or external_id):
        raise RequestValidationError(
            [{"loc": ("query",), "msg": "give email, phone or external_id", "type": "missing"}]
        )
    with transaction(runtime.database) as session:
        ids = [
            row.id for row in find_leads(session, email=email, phone=phone, external_id=external_id)
        ]
    return {"leads": [lead_view(runtime, lead_id) for lead_id in ids]}


@router.get("/leads/{lead_id}", responses=NOT_FOUND)
def get_lead(lead_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Identities, consent, score with its explanation, enrollments and steps, messages,
    recent events."""
    try:
        return lead_view(runtime, lead_id)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc


@router.post("/leads/{lead_id}/pause", response_model=Done, responses=NOT_FOUND)
def pause(lead_id: str, request: PauseRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Hold every step of the lead (or one sequence); with `until`, resume by itself."""
    try:
        outcome = pause_lead(
            runtime,
            lead_id,
            sequence=request.sequence,
            reason=request.reason,
            until=request.until,
            by=request.by or "api",
            actor="api",
        )
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return _done(lead_id, outcome)


@router.post("/leads/{lead_id}/resume", response_model=Done, responses=NOT_FOUND)
def resume(lead_id: str, request: ResumeRequest, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        outcome = resume_lead(runtime, lead_id, sequence=request.sequence, actor="api")
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return _done(lead_id, outcome)


@router.post("/leads/{lead_id}/exit", response_model=Done, responses=NOT_FOUND)
def exit_sequence(lead_id: str, request: ExitRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """End the lead's enrollment in `sequence`, or in every sequence when it is absent; 404
    when there is none to end."""
    try:
        outcome = exit_lead(runtime, lead_id, request.sequence, request.reason, actor="api")
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    if not outcome.exited:
        where = request.sequence or "any sequence"
        raise HTTPException(404, detail=f"the lead is not enrolled in {where}")
    return _done(lead_id, outcome)


@router.post(
    "/enrollments",
    status_code=201,
    response_model=Enrolled,
    responses={
        201: {
            "description": "enrolled; a repeated Idempotency-Key answers the first answer",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when this is the kept answer to an earlier request",
                    "schema": {"type": "string"},
                }
            },
        },
        **NOT_FOUND,
        409: {"model": ErrorResponse, "description": "the sequence's `reenroll:` rule refuses"},
    },
)
def enroll(
    request: EnrollRequest,
    runtime: RuntimeDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=200)
    ] = None,
) -> JSONResponse:
    """Enroll a lead by hand (created when new), with the event `properties` a keyed or
    anchored sequence needs; the sequence's `reenroll:` rule holds (409 naming it)."""
    try:
        found = enroll_by_hand(runtime, request.manual(idempotency_key), actor="api")
    except InvalidField as exc:
        return _invalid(exc)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    headers = {"Idempotent-Replayed": "true"} if found.replayed else None
    return JSONResponse(found.body, status_code=found.status_code, headers=headers)


@router.post("/enrollments/batch", status_code=207, response_model=EnrollBatchResult)
def enroll_batch(batch: EnrollmentBatch, runtime: RuntimeDep) -> JSONResponse:
    """Up to 1,000 enrollments (each `{lead, sequence, properties?, idempotency_key?}`), one
    result per item in order: the 201 body or `{"error": …}`; a valid item is enrolled even
    when another item is refused."""
    results: list[Any] = []
    valid: list[tuple[int, ManualEnrollment]] = []
    for item in batch.enrollments:
        try:
            parsed = EnrollItem.model_validate(item)
        except ValidationError as exc:
            fields = field_errors(exc.errors(), drop_prefix=())
            results.append(error_body(summary(fields), code="invalid", fields=fields))
            continue
        valid.append((len(results), parsed.manual(parsed.idempotency_key)))
        results.append(None)
    done = enroll_each(runtime, [request for _, request in valid], actor="api")
    for (position, _), result in zip(valid, done, strict=True):
        if isinstance(result, Refused):
            results[position] = error_body(result.message, code=result.code, fields=result.fields)
        else:
            results[position] = result.body
    return JSONResponse({"results": results}, status_code=207)


def _invalid(exc: InvalidField) -> JSONResponse:
    fields = [{"field": exc.field, "message": exc.detail}]
    return JSONResponse(error_body(str(exc), code="invalid", fields=fields), status_code=422)
