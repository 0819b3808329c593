"""Webhooks (SPEC §4): forms, Shopify, Twilio status callbacks and inbound messages.

Each route checks its signature over the raw body before it reads anything else (401, nothing
written), maps the delivery with `worker.ingest.sources` and records it in one transaction
(`worker.ingest.intake`, `worker.ingest.texts`), so a repeated delivery changes nothing. No
provider is called while the sender waits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator  # type: ignore[import-untyped]

from worker.api.deps import ErrorResponse, RuntimeDep, error_body
from worker.api.events import EventResult, QueuedResult, take_event
from worker.ingest.sources.common import Ignored, Invalid, form_pairs, invalid, json_object
from worker.ingest.sources.forms import form_event, form_fields, form_signature_ok
from worker.ingest.sources.shopify import shopify_event, shopify_signature_ok
from worker.ingest.sources.twilio import callback_status, inbound_event, required
from worker.ingest.texts import record_inbound, record_status

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
FORM_NAME = r"^[A-Za-z0-9_.-]{1,100}$"
STEP_RUN_ID = r"^[A-Za-z0-9_-]{1,32}$"


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


# -- forms ------------------------------------------------------------------------------------


@router.post(
    "/forms/{form}",
    status_code=202,
    response_model=EventResult,
    responses={
        200: {
            "model": EventResult | QueuedResult,
            "description": "a repeated delivery: nothing changed",
        },
        202: {"model": EventResult | QueuedResult, "description": "recorded, or queued"},
        **_errors(401, 413, 415, 422),
    },
    openapi_extra=FORM_BODY,
)
async def post_form(
    form: Annotated[str, PathParam(pattern=FORM_NAME)],
    request: Request,
    body: RawBody,
    runtime: RuntimeDep,
) -> Any:
    """A form submission (JSON or form-encoded) → `form_submitted`. Signed with
    `X-Nurture-Signature: sha256=<hex HMAC>` when NURTURE_FORM_SECRET is set; an
    `X-Nurture-Delivery` header or an `id` field makes a repeat change nothing. Answered early
    (202 `queued`) when `form` is in NURTURE_RESPOND_ASYNC_SOURCES."""
    secret = _secret(runtime.config.form_secret)
    signature = request.headers.get("X-Nurture-Signature")
    if secret is not None and not form_signature_ok(secret, body, signature):
        raise _unauthorized("X-Nurture-Signature must be sha256=<hex HMAC-SHA256 of the body>")
    try:
        fields = form_fields(body, request.headers.get("content-type"))
        event = form_event(form, fields, request.headers.get("X-Nurture-Delivery"))
    except Invalid as exc:
        return _invalid(exc)
    return await take_event(request, runtime, event, "form")


# -- Shopify ----------------------------------------------------------------------------------


@router.post(
    "/shopify",
    status_code=202,
    response_model=EventResult,
    responses={
        200: {
            "model": EventResult | IgnoredResult | QueuedResult,
            "description": "a repeated delivery, or one that changes nothing (ignored)",
        },
        202: {"model": EventResult | QueuedResult, "description": "recorded, or queued"},
        **_errors(401, 413, 422),
    },
    openapi_extra=SHOPIFY_BODY,
)
async def post_shopify(request: Request, body: RawBody, runtime: RuntimeDep) -> Any:
    """checkouts/create → checkout_started, a completed checkout → checkout_completed,
    orders/create → order_placed (one per order); other topics are ignored. Answered early
    (202 `queued`) when `shopify` is in NURTURE_RESPOND_ASYNC_SOURCES."""
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
    return await take_event(request, runtime, found, "shopify")


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
def twilio_status(
    params: TwilioParams,
    runtime: RuntimeDep,
    step_run: Annotated[str | None, Query(max_length=32, pattern=STEP_RUN_ID)] = None,
) -> JSONResponse:
    """A delivery status callback: the message's status moves forward only; delivered emits
    `sms_delivered`, failed or undelivered `sms_failed`; an unknown message changes nothing,
    unless `step_run` (in the StatusCallback URL Nurture gave, which Twilio signs) names a step
    left `unknown` for that number: it is then confirmed `sent`."""
    try:
        message_sid = required(params, "MessageSid")
        status = callback_status(params)
    except Invalid as exc:
        return _invalid(exc)
    recorded = record_status(runtime, params, message_sid, status, step_run)
    return JSONResponse(StatusResult.model_validate(recorded, from_attributes=True).model_dump())


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
    record_inbound(runtime, inbound)
    return Response(EMPTY_TWIML, media_type="text/xml")
