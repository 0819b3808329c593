"""What webhooks mean (SPEC §4), as pure functions: signatures, form fields, Shopify payloads
and Twilio parameters in; an `EventIn` (or the reason to ignore a delivery) out.

No database and no HTTP here: the routes in `worker.api.webhooks` read the request, call these
and ingest the result.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from pydantic import TypeAdapter, ValidationError

from integrations.twilio import SUPPRESSING
from worker.api.deps import field_errors
from worker.ingest.schemas import Email, EventIn, LeadIn, Phone
from worker.kit.errors import NurtureError

FieldError = dict[str, str]


class Invalid(NurtureError):
    """Input the sender must fix: a 4xx whose body names the fields."""

    def __init__(self, fields: list[FieldError], status: int = 422) -> None:
        super().__init__("; ".join(f"{f['field']}: {f['message']}" for f in fields))
        self.fields = fields
        self.status = status


def invalid(field: str, message: str, status: int = 422) -> Invalid:
    return Invalid([{"field": field, "message": message}], status)


@dataclass(frozen=True)
class Ignored:
    """A delivery that is understood and deliberately changes nothing (answered 200)."""

    reason: str


# -- signatures -------------------------------------------------------------------------------


def _same(expected: bytes, given: str) -> bool:
    # headers arrive decoded as latin-1; comparing bytes keeps compare_digest from raising on
    # a non-ASCII header, and keeps the comparison constant-time
    return hmac.compare_digest(expected, given.encode("latin-1", "replace"))


def form_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Nurture-Signature: sha256=<hex HMAC-SHA256 of the raw body>`."""
    if not header:
        return False
    scheme, _, digest = header.strip().partition("=")
    if scheme.lower() != "sha256":
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _same(expected.encode(), digest.lower())


def shopify_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Shopify's documented check: base64(HMAC-SHA256(app secret, raw body))."""
    if not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return _same(expected, header.strip())


# -- request bodies ---------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON body that must be an object."""
    try:
        data = json.loads(body, parse_constant=_not_a_number)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid("body", f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise invalid("body", "send a JSON object")
    return data


def _not_a_number(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON and which PostgreSQL refuses
    raise ValueError(f"{name} is not a JSON number")


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """An `application/x-www-form-urlencoded` body, blank values kept (an empty form field)."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise invalid("body", f"not a form-encoded body: {exc}") from exc


def form_fields(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A form body as a dict; a field sent more than once (a checkbox group) is a list."""
    kind = media_type(content_type)
    if kind == "application/json" or kind.endswith("+json"):
        return json_object(body)
    if kind == "application/x-www-form-urlencoded":
        fields: dict[str, Any] = {}
        for name, value in form_pairs(body):
            if name in fields:
                before = fields[name]
                fields[name] = [*before, value] if isinstance(before, list) else [before, value]
            else:
                fields[name] = value
        return fields
    raise invalid(
        "content-type",
        "send application/json or application/x-www-form-urlencoded",
        status=415,
    )


# -- forms ------------------------------------------------------------------------------------

LEAD_FIELDS = ("email", "phone", "first_name", "last_name", "timezone", "external_id")
CONSENT_FIELDS = {
    "consent_email": "email",
    "consent_sms": "sms",
    "consent_whatsapp": "whatsapp",
    "email_opt_in": "email",
    "sms_opt_in": "sms",
    "whatsapp_opt_in": "whatsapp",
}
CHANNELS = ("email", "sms", "whatsapp")
TRUTHY = frozenset({"on", "true", "yes", "1"})
FALSY = frozenset({"off", "false", "no", "0"})


def consent_value(field: str, value: Any) -> bool | None:
    """A checkbox or a JSON boolean; a blank value says nothing (None)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUTHY:
            return True
        if word in FALSY:
            return False
        if not word:
            return None
    raise invalid(field, "use on/true/yes/1 to grant consent, or off/false/no/0")


def _consent_object(name: str, value: Mapping[str, Any]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for channel, given in value.items():
        if channel not in CHANNELS:
            raise invalid(f"{name}.{channel}", "consent is given for email, sms or whatsapp")
        granted = consent_value(f"{name}.{channel}", given)
        if granted is not None:
            found[channel] = granted
    return found


def form_event(form: str, fields: Mapping[str, Any], delivery: str | None) -> EventIn:
    """Form fields → a `form_submitted` event: identity, names and consent to the lead, the
    rest to properties. The delivery header, else an `id` field, makes a repeat harmless."""
    lead: dict[str, Any] = {}
    consent: dict[str, bool] = {}
    properties: dict[str, Any] = {}
    given_id: Any = None
    for name, value in fields.items():
        key = name.strip().lower()
        if key in LEAD_FIELDS:
            if isinstance(value, str) and "\x00" in value:
                # PostgreSQL text cannot hold NUL: refuse it here, not as a 500 at commit
                raise invalid(name, "a NUL character is not allowed")
            # an HTML form sends an optional field left empty as "": that is no value
            if value is not None and value != "":
                lead[key] = value
        elif key in CONSENT_FIELDS:
            granted = consent_value(name, value)
            if granted is not None:
                consent[CONSENT_FIELDS[key]] = granted
        elif key == "consent" and isinstance(value, dict):
            # the shape POST /v1/events takes, for JSON senders that know it
            consent.update(_consent_object(name, value))
        elif key == "id":
            given_id = value
        else:
            properties[name] = value
    if consent:
        lead["consent"] = consent
    properties["form"] = form
    key_field, event_key = _form_key(form, delivery, given_id)
    payload = {"id": event_key, "type": "form_submitted", "lead": lead, "properties": properties}
    try:
        return EventIn.model_validate(payload)
    except ValidationError as exc:
        raise Invalid([_form_field(e, key_field) for e in field_errors(exc.errors(), ())]) from exc


def _form_key(form: str, delivery: str | None, given: Any) -> tuple[str, str | None]:
    """The idempotency key, scoped to the form so it cannot collide with API event ids."""
    if delivery and delivery.strip():
        return "X-Nurture-Delivery", f"form:{form}:{delivery.strip()}"
    usable = isinstance(given, str | int) and not isinstance(given, bool)
    if usable and "\x00" not in str(given) and str(given).strip():
        return "id", f"form:{form}:{str(given).strip()}"
    if given not in (None, ""):
        raise invalid("id", "give the submission id as a string (no NUL characters)")
    return "id", None


def _form_field(error: FieldError, key_field: str) -> FieldError:
    """EventIn's field names as the form calls them (`lead.email` → `email`)."""
    parts = error["field"].split(".")
    if parts[0] == "lead":
        # a lead without any identity: the form's identity fields are what is missing
        name = ".".join(parts[1:]) or "email"
    elif parts[0] == "id":
        name = key_field
    else:
        name = error["field"]
    return {"field": name, "message": error["message"]}


# -- Shopify ----------------------------------------------------------------------------------

MARKETING_BOXES = (("email", "buyer_accepts_marketing"), ("sms", "buyer_accepts_sms_marketing"))
"""The checkout's marketing boxes → consent for that channel, granted or withdrawn."""
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_PHONE: TypeAdapter[str] = TypeAdapter(Phone)


def _valid(adapter: TypeAdapter[str], *candidates: Any) -> str | None:
    """The first candidate that validates. Shopify stores what shoppers typed (a phone in
    national form, say): an unusable value is dropped, never a reason to refuse the delivery."""
    for value in candidates:
        if isinstance(value, str) and value.strip():
            try:
                return adapter.validate_python(value.strip())
            except ValidationError:
                continue
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _time(value: Any) -> str | None:
    """An ISO time with an offset, as Shopify sends it; anything else means "now"."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return value if parsed.tzinfo is not None else None


def shopify_lead(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The shopper as a lead, or None when the payload names no email and no phone."""
    customer = _dict(payload.get("customer"))
    billing = _dict(payload.get("billing_address"))
    email = _valid(
        _EMAIL, payload.get("email"), payload.get("contact_email"), customer.get("email")
    )
    phone = _valid(_PHONE, payload.get("phone"), customer.get("phone"), billing.get("phone"))
    if email is None and phone is None:
        return None
    lead: dict[str, Any] = {"email": email, "phone": phone}
    if customer.get("id") is not None:
        lead["external_id"] = f"shopify:{customer['id']}"
    for name in ("first_name", "last_name"):
        value = customer.get(name) or billing.get(name)
        if isinstance(value, str) and value.replace("\x00", "").strip():
            # a name is never a reason to refuse a delivery: NUL (which PostgreSQL text cannot
            # hold) is dropped and an overlong name cut to the column's size
            lead[name] = value.replace("\x00", "").strip()[:200]
    consent = {
        channel: payload[field]
        for channel, field in MARKETING_BOXES
        if isinstance(payload.get(field), bool)
    }
    if consent:
        lead["consent"] = consent
    return lead


def _titles(payload: Mapping[str, Any]) -> list[str]:
    items = payload.get("line_items")
    if not isinstance(items, list):
        return []
    return [str(_dict(item).get("title")) for item in items if _dict(item).get("title")]


def _present(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value not in (None, "", [])}


def _cart_token(payload: Mapping[str, Any], checkout_token_field: str) -> Any:
    # newer checkouts may carry no cart_token; both sides then fall back to the checkout
    # token, which the order names too, so the order still finds the checkout's enrollment
    return payload.get("cart_token") or payload.get(checkout_token_field)


def shopify_event(topic: str, webhook_id: str, payload: Mapping[str, Any]) -> EventIn | Ignored:
    """A Shopify delivery → the event it means, or why it changes nothing."""
    if topic not in ("checkouts/create", "checkouts/update", "orders/create"):
        return Ignored(f"topic {topic}")
    if topic == "checkouts/update" and not payload.get("completed_at"):
        return Ignored("checkout not completed")
    lead = shopify_lead(payload)
    if lead is None:
        return Ignored("no identity")
    if topic == "orders/create":
        return _order_placed(payload, lead)
    if topic == "checkouts/update":
        return _checkout_completed(webhook_id, payload, lead)
    return _checkout_started(webhook_id, payload, lead)


def _checkout_started(webhook_id: str, payload: Mapping[str, Any], lead: dict[str, Any]) -> EventIn:
    properties = _present(
        cart_token=_cart_token(payload, "token"),
        checkout_id=payload.get("id"),
        checkout_token=payload.get("token"),
        total_price=payload.get("total_price"),
        currency=payload.get("currency"),
        abandoned_checkout_url=payload.get("abandoned_checkout_url"),
        line_items=_titles(payload),
    )
    return _shopify_event(
        f"shopify:{webhook_id}", "checkout_started", payload.get("created_at"), lead, properties
    )


def _checkout_completed(
    webhook_id: str, payload: Mapping[str, Any], lead: dict[str, Any]
) -> EventIn:
    properties = _present(
        cart_token=_cart_token(payload, "token"),
        checkout_id=payload.get("id"),
        checkout_token=payload.get("token"),
        order_id=payload.get("order_id"),
        total_price=payload.get("total_price"),
        currency=payload.get("currency"),
    )
    # a completed checkout keeps receiving updates (new webhook ids): one completion is one
    # event, like one order
    checkout_id = payload.get("id")
    key = f"shopify-checkout:{checkout_id}:completed" if checkout_id else f"shopify:{webhook_id}"
    return _shopify_event(key, "checkout_completed", payload.get("completed_at"), lead, properties)


def _order_placed(payload: Mapping[str, Any], lead: dict[str, Any]) -> EventIn:
    order_id = payload.get("id")
    if order_id in (None, ""):
        raise invalid("id", "an order without an id")
    properties = _present(
        order_id=order_id,
        order_number=payload.get("order_number") or payload.get("name"),
        cart_token=_cart_token(payload, "checkout_token"),
        checkout_token=payload.get("checkout_token"),
        total_price=payload.get("total_price"),
        currency=payload.get("currency"),
        line_items=_titles(payload),
    )
    # keyed by the order, not the delivery: Shopify may send one purchase more than once
    # under different webhook ids, and it must be one event
    return _shopify_event(
        f"shopify-order:{order_id}", "order_placed", payload.get("created_at"), lead, properties
    )


def _shopify_event(
    key: str, kind: str, at: Any, lead: dict[str, Any], properties: dict[str, Any]
) -> EventIn:
    payload = {
        "id": key[:200],
        "type": kind,
        "occurred_at": _time(at),
        "lead": lead,
        "properties": properties,
    }
    try:
        return EventIn.model_validate(payload)
    except ValidationError as exc:  # a name over 200 characters, say
        raise Invalid(field_errors(exc.errors(), ())) from exc


# -- Twilio -----------------------------------------------------------------------------------

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "undelivered": 3,
    "failed": 3,
    "canceled": 3,
    "read": 4,
}
"""Twilio's message statuses in the order they can happen. A callback may arrive late (Twilio
does not order them): a status only replaces one of a lower rank, so `sent` after `delivered`
changes nothing, and the first final status (delivered, undelivered, failed, canceled) stays.
WhatsApp's `read` comes after `delivered` and implies it."""
DELIVERED = 3


def required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if not value:
        raise invalid(name, f"Twilio sends {name}; it is missing")
    if "\x00" in value:
        raise invalid(name, "a NUL character is not allowed")
    return value


def callback_status(params: Mapping[str, str]) -> str:
    """The status a callback reports; SMS callbacks repeat it as the older `SmsStatus`."""
    status = (params.get("MessageStatus") or params.get("SmsStatus") or "").strip().lower()
    if not status:
        raise invalid("MessageStatus", "Twilio sends MessageStatus; it is missing")
    return status


def moves_forward(current: str, new: str) -> bool:
    """A status Twilio reports replaces the stored one only if it comes later."""
    return new in STATUS_RANK and STATUS_RANK[new] > STATUS_RANK.get(current, -1)


def status_events(
    message_sid: str, current: str, new: str, params: Mapping[str, str], channel: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """The events a status change emits, as (key, type, properties): `sms_delivered` when the
    message reaches delivered (or read, which implies it), `sms_failed` when it fails."""
    properties: dict[str, Any] = {"message_sid": message_sid, "channel": channel, "status": new}
    if not moves_forward(current, new):
        return []
    if new in ("delivered", "read") and STATUS_RANK.get(current, -1) < DELIVERED:
        return [(f"twilio:{message_sid}:delivered", "sms_delivered", properties)]
    if new in ("failed", "undelivered"):
        error = params.get("ErrorCode") or None
        failed = {**properties, "error_code": error}
        # a messaging service reports 21610 (STOP) or an invalid number here, not at send time
        suppress = SUPPRESSING.get(int(error)) if error and error.isdigit() else None
        if suppress is not None:
            failed["suppress"] = suppress
        return [(f"twilio:{message_sid}:{new}", "sms_failed", failed)]
    return []


@dataclass(frozen=True)
class Inbound:
    event: EventIn
    channel: str
    """sms or whatsapp."""


def inbound_event(params: Mapping[str, str]) -> Inbound:
    """An inbound message → unsubscribed (STOP …), resubscribed (START …), help_requested
    (HELP, INFO) or replied, for the lead with the sender's number."""
    message_sid = required(params, "MessageSid")
    sender = required(params, "From")
    channel = "whatsapp" if sender.lower().startswith("whatsapp:") else "sms"
    phone = sender.split(":", 1)[1].strip() if channel == "whatsapp" else sender
    try:
        lead = LeadIn(phone=phone)
    except ValidationError as exc:
        message = field_errors(exc.errors(), ())[0]["message"]
        raise invalid("From", message) from exc
    body = params.get("Body", "")
    kind, properties = _meaning(body, channel)
    event = EventIn(id=f"twilio:{message_sid}", type=kind, lead=lead, properties=properties)
    return Inbound(event, channel)


def _meaning(body: str, channel: str) -> tuple[str, dict[str, Any]]:
    # carriers treat a message that is just the keyword as the keyword ("Stop." included)
    word = body.strip().strip(".!").strip().upper()
    if word in STOP_WORDS:
        return "unsubscribed", {"channel": channel, "reason": "stop", "keyword": word}
    if word in START_WORDS:
        return "resubscribed", {"channel": channel, "keyword": word}
    if word in HELP_WORDS:
        return "help_requested", {"channel": channel, "keyword": word}
    return "replied", {"channel": channel, "body": body}
