"""Twilio webhooks (SPEC §4): a status callback's status and the events it emits as it moves a
message forward; an inbound SMS or WhatsApp text mapped to STOP, START, HELP or a reply."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from integrations.twilio import SUPPRESSING
from worker.ingest.schemas import EventIn, LeadIn
from worker.ingest.sources.common import invalid
from worker.kit.fields import field_errors

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
