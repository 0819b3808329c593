"""Webhooks (SPEC §4): forms, Shopify, Twilio status callbacks and inbound messages.

Each route checks its signature over the raw body before it reads anything else (401, nothing
written), maps the delivery with `worker.ingest.webhooks` and ingests it in one transaction, so a
repeated delivery changes nothing. No provider is called while the sender waits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from worker.api.deps import ErrorResponse, RuntimeDep, error_body
from worker.api.events import EventResult, apply, result_of
from worker.crm.service import record_message_status
from worker.engine.core import Engine
from worker.ingest.schemas import EventIn
from worker.ingest.service import Ingested, ingest
from worker.ingest.webhooks import (
    Ignored,
    Invalid,
    callback_status,
    form_event,
    form_fields,
    form_pairs,
    form_signature_ok,
    inbound_event,
    invalid,
    json_object,
    moves_forward,
    required,
    shopify_event,
    shopify_signature_ok,
    status_events,
)
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.leads import lead_identity
from worker.store.messages import find_by_provider_id, set_status
from worker.store.tables import LeadRow
from worker.store.worlds import lock_lead

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
T = TypeVar("T")
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FORM_NAME = r"^[A-Za-z0-9_.-]{1,100}$"


# -- response models (for the OpenAPI document) -----------------------------------------------


class IgnoredResult(BaseModel):
    ignored: str = Field(examples=["no identity"])


class StatusResult(BaseModel):
    message_sid: str
    status: str | None = Field(description="the stored status now; null for an unknown message")
    changed: bool
    events: list[str] = Field(default_factory=list)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or bad signature: nothing was written",
        413: "the body is over 1 MiB",
        415: "a body that is neither JSON nor form-encoded",
        422: "a field is missing or invalid (named in `fields`): nothing was written",
    }
    return {code: {"model": ErrorResponse, "description": described[code]} for code in codes}


def _body(content: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": content}}


_ANY_OBJECT = {"type": "object", "additionalProperties": True}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
FORM_BODY = _body(
    {
        "application/json": {
            "schema": _ANY_OBJECT,
            "example": {"email": "ana@example.com", "consent_sms": "on", "plan": "pro"},
        },
        "application/x-www-form-urlencoded": {"schema": _STRINGS},
    }
)
SHOPIFY_BODY = _body({"application/json": {"schema": _ANY_OBJECT}})
TWILIO_BODY = _body({"application/x-www-form-urlencoded": {"schema": _STRINGS}})


# -- shared pieces ----------------------------------------------------------------------------


async def raw_body(request: Request) -> bytes:
    """The body exactly as signed: signatures are over these bytes, not a parsed copy."""
    return await request.body()


RawBody = Annotated[bytes, Depends(raw_body)]


def _secret(value: SecretStr | None) -> str | None:
    found = value.get_secret_value() if value is not None else ""
    return found or None


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, detail=message)


def _invalid(exc: Invalid) -> JSONResponse:
    body = error_body(str(exc), code="invalid", fields=exc.fields)
    return JSONResponse(body, status_code=exc.status)


def _accepted(found: Ingested) -> JSONResponse:
    """The answer POST /v1/events gives: 202, or 200 for a delivery already recorded."""
    return JSONResponse(result_of(found).model_dump(), status_code=200 if found.duplicate else 202)


def _atomically(runtime: Runtime, work: Callable[[Session, datetime], T]) -> T:
    """One transaction, retried like `apply`: a concurrent insert of the same new lead or
    event id loses on a unique key, and the retry then finds what the winner wrote."""
    for attempt in range(3):
        try:
            with transaction(runtime.database) as session:
                return work(session, datetime.now(UTC))
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError  # pragma: no cover


# -- forms ------------------------------------------------------------------------------------


@router.post(
    "/forms/{form}",
    status_code=202,
    response_model=EventResult,
    responses={
        200: {"model": EventResult, "description": "a repeated delivery: nothing changed"},
        **_errors(401, 413, 415, 422),
    },
    openapi_extra=FORM_BODY,
)
def post_form(
    form: Annotated[str, PathParam(pattern=FORM_NAME)],
    request: Request,
    body: RawBody,
    runtime: RuntimeDep,
) -> JSONResponse:
    """A form submission (JSON or form-encoded) → `form_submitted`. Signed with
    `X-Nurture-Signature: sha256=<hex HMAC>` when NURTURE_FORM_SECRET is set; an
    `X-Nurture-Delivery` header or an `id` field makes a repeat change nothing."""
    secret = _secret(runtime.config.form_secret)
    signature = request.headers.get("X-Nurture-Signature")
    if secret is not None and not form_signature_ok(secret, body, signature):
        raise _unauthorized("X-Nurture-Signature must be sha256=<hex HMAC-SHA256 of the body>")
    try:
        fields = form_fields(body, request.headers.get("content-type"))
        event = form_event(form, fields, request.headers.get("X-Nurture-Delivery"))
    except Invalid as exc:
        return _invalid(exc)
    return _accepted(apply(runtime, event, source="form"))


# -- Shopify ----------------------------------------------------------------------------------


@router.post(
    "/shopify",
    status_code=202,
    response_model=EventResult,
    responses={
        200: {
            "model": EventResult | IgnoredResult,
            "description": "a repeated delivery, or one that changes nothing (ignored)",
        },
        **_errors(401, 413, 422),
    },
    openapi_extra=SHOPIFY_BODY,
)
def post_shopify(request: Request, body: RawBody, runtime: RuntimeDep) -> JSONResponse:
    """checkouts/create → checkout_started, a completed checkout → checkout_completed,
    orders/create → order_placed (one per order); other topics are ignored."""
    secret = _secret(runtime.config.shopify_webhook_secret)
    signature = request.headers.get("X-Shopify-Hmac-Sha256")
    # with no secret configured nothing could be verified: refuse rather than trust
    if secret is None or not shopify_signature_ok(secret, body, signature):
        raise _unauthorized("X-Shopify-Hmac-Sha256 does not match the body")
    try:
        topic = _header(request, "X-Shopify-Topic")
        webhook_id = _header(request, "X-Shopify-Webhook-Id")
        found = shopify_event(topic, webhook_id, json_object(body))
    except Invalid as exc:
        return _invalid(exc)
    if isinstance(found, Ignored):
        # Shopify counts any answer but a 2xx as a failure and retries it (8 times over
        # 4 hours, then it may drop the subscription): what we ignore on purpose is a 200
        return JSONResponse({"ignored": found.reason}, status_code=200)
    return _accepted(apply(runtime, found, source="shopify"))


def _header(request: Request, name: str) -> str:
    value = request.headers.get(name, "").strip()
    if not value:
        raise invalid(name, f"the {name} header is missing")
    return value


# -- Twilio -----------------------------------------------------------------------------------


async def twilio_params(request: Request, runtime: RuntimeDep) -> Mapping[str, str]:
    """The form parameters of a request Twilio signed, checked with Twilio's own validator
    against the public URL Twilio called (the server may sit behind a proxy)."""
    token = _secret(runtime.config.twilio_auth_token)
    if token is None:
        raise _unauthorized("no Twilio auth token is configured: nothing can be verified")
    body = await request.body()
    try:
        pairs = form_pairs(body)
    except Invalid as exc:
        raise _unauthorized("the body is not form-encoded as Twilio signs it") from exc
    url = runtime.config.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    signature = request.headers.get("X-Twilio-Signature", "")
    params = ImmutableMultiDict(pairs)  # getlist: the validator signs every repeated value
    if not signature or not RequestValidator(token).validate(url, params, signature):
        raise _unauthorized("X-Twilio-Signature does not match this URL and these parameters")
    return dict(pairs)


TwilioParams = Annotated[Mapping[str, str], Depends(twilio_params)]


@router.post(
    "/twilio/status",
    response_model=StatusResult,
    responses=_errors(401, 413, 422),
    openapi_extra=TWILIO_BODY,
)
def twilio_status(params: TwilioParams, runtime: RuntimeDep) -> JSONResponse:
    """A delivery status callback: the message's status moves forward only; delivered emits
    `sms_delivered`, failed or undelivered `sms_failed`; an unknown message changes nothing."""
    try:
        message_sid = required(params, "MessageSid")
        status = callback_status(params)
    except Invalid as exc:
        return _invalid(exc)
    result = _atomically(
        runtime,
        lambda session, now: _record_status(
            runtime.engine, session, now, params, message_sid, status
        ),
    )
    return JSONResponse(result.model_dump())


def _record_status(
    engine: Engine,
    session: Session,
    now: datetime,
    params: Mapping[str, str],
    message_sid: str,
    status: str,
) -> StatusResult:
    found = find_by_provider_id(session, message_sid)
    if found is None:
        return StatusResult(message_sid=message_sid, status=None, changed=False)
    # the lead's lock serializes this with other callbacks and sends for the same lead; the
    # message is then re-read, so two callbacks racing cannot both think they moved it
    lead_row = lock_lead(session, found.lead_id)
    message = find_by_provider_id(session, message_sid, lock=True)
    assert message is not None
    current = message.status
    if not moves_forward(current, status):
        return StatusResult(message_sid=message_sid, status=current, changed=False)
    set_status(session, message, status, now)
    record_message_status(session, lead_row, message, status, now)
    emitted = []
    identity = lead_identity(lead_row) if lead_row is not None else None
    for key, kind, properties in status_events(
        message_sid, current, status, params, message.channel
    ):
        if identity is not None:  # an erased lead keeps no identity and hears nothing more
            event = EventIn(id=key, type=kind, lead=identity, properties=properties)
            if not ingest(session, engine, event, now, source="twilio").duplicate:
                emitted.append(kind)
    return StatusResult(message_sid=message_sid, status=status, changed=True, events=emitted)


@router.post(
    "/twilio/inbound",
    response_class=Response,
    responses={
        200: {
            "content": {"text/xml": {"example": EMPTY_TWIML}},
            "description": "an empty TwiML answer: nothing is sent back",
        },
        **_errors(401, 413, 422),
    },
    openapi_extra=TWILIO_BODY,
)
def twilio_inbound(params: TwilioParams, runtime: RuntimeDep) -> Response:
    """An inbound SMS or WhatsApp message: STOP … unsubscribes that channel, START …
    resubscribes, HELP/INFO is recorded, any other text is `replied`."""
    try:
        inbound = inbound_event(params)
    except Invalid as exc:
        return _invalid(exc)

    def record(session: Session, now: datetime) -> Ingested:
        found = ingest(session, runtime.engine, inbound.event, now, source="twilio")
        if inbound.channel == "whatsapp" and not found.duplicate:
            _opened_whatsapp_session(session, found.lead_id, now)
        return found

    _atomically(runtime, record)
    return Response(EMPTY_TWIML, media_type="text/xml")


def _opened_whatsapp_session(session: Session, lead_id: str, now: datetime) -> None:
    """The lead's last WhatsApp message opens the 24-hour window for free-form replies; it is
    written in the ingest's transaction, on the lead row ingest already holds locked."""
    row = session.get(LeadRow, lead_id)
    if row is None:  # pragma: no cover - ingest has just written it
        return
    if row.last_inbound_whatsapp_at is None or row.last_inbound_whatsapp_at < now:
        row.last_inbound_whatsapp_at = now
        session.add(row)
