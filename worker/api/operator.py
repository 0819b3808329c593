"""Operator endpoints (SPEC §5): sequences and their funnels; a person's data exported or
erased. Bearer token required, like everything under /v1/ but the webhooks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel

from worker.api.deps import ERRORS, NOT_FOUND, Authorized, RuntimeDep
from worker.kit.errors import NotFound
from worker.stats import service as stats
from worker.support import privacy

router = APIRouter(prefix="/v1", dependencies=[Authorized], responses=ERRORS, tags=["operator"])


class StepInfo(BaseModel):
    id: str
    channel: str | None
    timing: dict[str, Any]
    variants: list[dict[str, Any]] | None = None


class SequenceInfo(BaseModel):
    id: str
    name: str
    description: str | None
    version: str
    steps: list[StepInfo]
    enroll: dict[str, Any] | None
    exit_on: list[str]
    goal: dict[str, str] | None
    active_enrollments: int


class SequenceList(BaseModel):
    sequences: list[SequenceInfo]


class StepFunnel(BaseModel):
    step: str
    variant: int | None
    channel: str | None
    scheduled: int
    sent: int
    delivered: int
    opened: int
    clicked: int
    replied: int
    failed: int
    unknown: int
    skipped: dict[str, int]
    unsubscribed: int
    converted: int


class Funnel(BaseModel):
    sequence: str
    name: str | None
    goal: dict[str, str] | None
    enrollments: dict[str, int]
    steps: list[StepFunnel]


@router.get("/sequences", response_model=SequenceList)
def list_sequences(runtime: RuntimeDep) -> dict[str, Any]:
    """Every loaded sequence: steps with their timing as written, enroll triggers, and how
    many enrollments are active."""
    return {"sequences": stats.sequences(runtime)}


@router.get(
    "/sequences/{sequence_id}/stats",
    response_model=Funnel,
    responses=NOT_FOUND,
)
def sequence_stats(sequence_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """The funnel per step and variant: scheduled, sent, delivered, opened, clicked, replied,
    failed, skipped by reason, unsubscribed, converted."""
    try:
        return stats.funnel(runtime, sequence_id)
    except stats.UnknownSequence as exc:
        raise HTTPException(404, detail=str(exc)) from exc


@router.delete(
    "/leads/{lead_id}",
    status_code=204,
    response_class=Response,
    responses=NOT_FOUND,
)
def erase_lead(lead_id: str, runtime: RuntimeDep) -> Response:
    """Erase the person: identities, names, attributes, consent, score entries, message
    addresses and bodies, event properties. Anonymous rows stay, so counts add up; active
    enrollments end (reason `erased`)."""
    try:
        privacy.erase(runtime, lead_id, actor="api")
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
    return Response(status_code=204)


@router.get("/leads/{lead_id}/export", responses=NOT_FOUND)
def export_lead(lead_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """All data held on the person: the lead, events, enrollments with their steps,
    messages, timeline, queued CRM changes, and the actions taken on them (who, when, why)."""
    try:
        return privacy.export(runtime, lead_id)
    except NotFound as exc:
        raise HTTPException(404, detail=str(exc)) from exc
