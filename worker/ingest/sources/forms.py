"""Form webhooks (SPEC §4): the `X-Nurture-Signature` check, a JSON or form-encoded body, and
the fields mapped to a `form_submitted` event — identity, names and consent to the lead."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from worker.ingest.schemas import EventIn
from worker.ingest.sources.common import (
    Invalid,
    form_pairs,
    invalid,
    json_object,
    media_type,
    same_digest,
)
from worker.kit.fields import FieldError, field_errors

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


def form_signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Nurture-Signature: sha256=<hex HMAC-SHA256 of the raw body>`."""
    if not header:
        return False
    scheme, _, digest = header.strip().partition("=")
    if scheme.lower() != "sha256":
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return same_digest(expected.encode(), digest.lower())


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
