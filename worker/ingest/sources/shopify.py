"""Shopify webhooks (SPEC §4): the `X-Shopify-Hmac-Sha256` check, and a checkout or an order
mapped to `checkout_started`, `checkout_completed` or `order_placed` (or why it is ignored)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from worker.ingest.schemas import Email, EventIn, Phone
from worker.ingest.sources.common import Ignored, Invalid, invalid, same_digest
from worker.kit.fields import field_errors

MARKETING_BOXES = (("email", "buyer_accepts_marketing"), ("sms", "buyer_accepts_sms_marketing"))
"""The checkout's marketing boxes → consent for that channel, granted or withdrawn."""
_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_PHONE: TypeAdapter[str] = TypeAdapter(Phone)


def shopify_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """Shopify's documented check: base64(HMAC-SHA256(app secret, raw body))."""
    if not header:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return same_digest(expected, header.strip())


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
