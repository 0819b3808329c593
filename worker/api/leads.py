"""Support endpoints (SPEC §5): look a lead up, see everything, pause, resume, exit, enroll."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from worker.api.deps import CONFLICT, ERRORS, NOT_FOUND, Authorized, RuntimeDep
from worker.engine.state import Outcome
from worker.ingest.schemas import AwareDatetime, LeadIn
from worker.kit.errors import Conflict, NotFound
from worker.store.db import transaction
from worker.store.leads import find_leads
from worker.support.service import enroll_lead, exit_lead, pause_lead, resume_lead
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
    sequence: str
    reason: str = Field(default="manual", max_length=200)


class EnrollRequest(Strict):
    lead: LeadIn
    sequence: str


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
        )
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return _done(lead_id, outcome)


@router.post("/leads/{lead_id}/resume", response_model=Done, responses=NOT_FOUND)
def resume(lead_id: str, request: ResumeRequest, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        outcome = resume_lead(runtime, lead_id, sequence=request.sequence)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return _done(lead_id, outcome)


@router.post("/leads/{lead_id}/exit", response_model=Done, responses=NOT_FOUND)
def exit_sequence(lead_id: str, request: ExitRequest, runtime: RuntimeDep) -> dict[str, Any]:
    try:
        outcome = exit_lead(runtime, lead_id, request.sequence, request.reason)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    if not outcome.exited:
        raise HTTPException(404, detail=f"the lead is not enrolled in {request.sequence}")
    return _done(lead_id, outcome)


@router.post(
    "/enrollments", status_code=201, response_model=Done, responses={**NOT_FOUND, **CONFLICT}
)
def enroll(request: EnrollRequest, runtime: RuntimeDep) -> JSONResponse:
    """Enroll a lead by hand (created when new); 409 when already active in the sequence."""
    try:
        lead_id, outcome = enroll_lead(runtime, request.lead, request.sequence)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    except Conflict as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    return JSONResponse(_done(lead_id, outcome), status_code=201)
