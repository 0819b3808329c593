"""POST /v1/webhooks/crm: the CRM tells Nurture a salesperson took over — pause, resume or exit
a lead (a HubSpot workflow's webhook action, or any CRM's).

Authenticated by a Standard Webhooks signature with `NURTURE_CRM_WEBHOOK_SECRET`, or by an API
bearer token (`NURTURE_API_TOKENS`); anything else is a 401 that changes nothing. The change
goes through the support services, so it is on the lead's timeline and flows back to the CRM.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from standardwebhooks import Webhook
from standardwebhooks.exceptions import WebhookVerificationError

from worker.api.deps import ErrorResponse, RuntimeDep, api_tokens, error_body, field_errors
from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.worlds import Loaded
from worker.support.service import lead_id_by_email
from worker.world.unit import with_lead

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class CrmCommand(BaseModel):
    """What the CRM asks for. `email` or `lead_id` names the lead."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["pause", "resume", "exit"]
    email: str | None = Field(default=None, max_length=320)
    lead_id: str | None = Field(default=None, max_length=32)
    sequence: str | None = Field(
        default=None, max_length=100, description="only this sequence (default: all of them)"
    )
    reason: str | None = Field(default=None, max_length=200)
    until: datetime | None = Field(default=None, description="pause: resume by itself then")

    @model_validator(mode="after")
    def _names_a_lead(self) -> CrmCommand:
        if not self.email and not self.lead_id:
            raise ValueError("give the lead's `email` or `lead_id`")
        if self.until is not None and self.until.tzinfo is None:
            raise ValueError("`until` needs a time zone offset, like 2026-12-01T09:00:00Z")
        return self


class CrmResult(BaseModel):
    lead_id: str
    action: str
    changed: list[dict[str, Any]] = Field(description="the timeline entries the action wrote")


def _unauthorized() -> HTTPException:
    return HTTPException(
        401,
        detail="sign with Standard Webhooks (NURTURE_CRM_WEBHOOK_SECRET) or send a bearer token",
    )


async def verified_body(request: Request, runtime: RuntimeDep) -> bytes:
    body = await request.body()
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        given = authorization[7:].strip()
        if given and any(hmac.compare_digest(given, t) for t in api_tokens(runtime)):
            return body
        raise _unauthorized()
    secret = runtime.config.crm_webhook_secret
    if secret is None:
        raise _unauthorized()
    try:
        Webhook(secret.get_secret_value()).verify(body, dict(request.headers), json_parse=False)
    except WebhookVerificationError as exc:
        raise _unauthorized() from exc
    return body


VerifiedBody = Annotated[bytes, Depends(verified_body)]


@router.post(
    "/crm",
    response_model=CrmResult,
    responses={
        401: {"model": ErrorResponse, "description": "no valid signature or token"},
        404: {"model": ErrorResponse, "description": "no such lead"},
        422: {"model": ErrorResponse, "description": "bad input: `error.fields` names each"},
    },
)
def post_crm(body: VerifiedBody, runtime: RuntimeDep) -> JSONResponse:
    """Pause, resume or exit a lead (every sequence, or `sequence`): a salesperson takes over."""
    try:
        command = CrmCommand.model_validate_json(body or b"{}")
    except ValidationError as exc:
        fields = field_errors(exc.errors(), drop_prefix=())
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(error_body(message, code="invalid", fields=fields), status_code=422)
    try:
        lead_id = command.lead_id or lead_id_by_email(runtime, str(command.email).strip().lower())
        outcome = apply_command(runtime, lead_id, command)
    except NotFound as exc:
        return JSONResponse(error_body(str(exc), code="not_found"), status_code=404)
    changed = [
        {"action": e.action, "sequence": e.sequence, "reason": e.reason} for e in outcome.entries
    ]
    result = CrmResult(lead_id=lead_id, action=command.action, changed=changed)
    return JSONResponse(result.model_dump())


def apply_command(runtime: Runtime, lead_id: str, command: CrmCommand) -> Outcome:
    """One transaction under the lead's lock; repeating a command changes nothing more."""

    def act(engine: Engine, loaded: Loaded, now: datetime) -> Outcome:
        world = loaded.world
        if command.action == "pause":
            if command.sequence is None and world.lead.pause is not None:
                return Outcome()
            return engine.pause(
                world,
                now,
                sequence_id=command.sequence,
                until=command.until,
                reason=command.reason or "crm",
                by="crm",
            )
        if command.action == "resume":
            return engine.resume(world, now, sequence_id=command.sequence)
        outcome = Outcome()
        for sequence_id in sorted({e.sequence_id for e in world.active()}):
            if command.sequence in (None, sequence_id):
                outcome.extend(engine.exit(world, sequence_id, now, command.reason or "crm"))
        return outcome

    return with_lead(runtime, lead_id, act)
