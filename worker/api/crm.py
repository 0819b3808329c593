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

from worker.api.deps import ErrorResponse, RuntimeDep, api_tokens, error_body
from worker.kit.errors import NotFound
from worker.kit.fields import field_errors, summary
from worker.support.service import apply_crm_command, lead_id_by_email

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
        invalid = error_body(summary(fields), code="invalid", fields=fields)
        return JSONResponse(invalid, status_code=422)
    try:
        lead_id = command.lead_id or lead_id_by_email(runtime, str(command.email).strip().lower())
        outcome = apply_crm_command(
            runtime,
            lead_id,
            command.action,
            sequence=command.sequence,
            reason=command.reason,
            until=command.until,
            actor="crm",
        )
    except NotFound as exc:
        return JSONResponse(error_body(str(exc), code="not_found"), status_code=404)
    changed = [
        {"action": e.action, "sequence": e.sequence, "reason": e.reason} for e in outcome.entries
    ]
    result = CrmResult(lead_id=lead_id, action=command.action, changed=changed)
    return JSONResponse(result.model_dump())
