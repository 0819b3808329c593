"""The engine's reason codes in plain words, for the lead page: why a step was skipped, failed
or is held, why an enrollment ended, what a suppression or a delivery status means. An unknown
code is shown as it is: a new reason is never hidden."""

from __future__ import annotations

from datetime import timedelta

from worker.definitions.models import Caps

CHANNEL_NAMES = {"email": "email", "sms": "SMS", "whatsapp": "WhatsApp"}
MESSAGES = {
    "email": ("email", "emails"),
    "sms": ("text message", "text messages"),
    "whatsapp": ("WhatsApp message", "WhatsApp messages"),
}

SKIPPED = {
    "exited": "the enrollment had ended",
    "no_address": "no {address} to send to",
    "condition": "its condition said no",
    "whatsapp_window": "outside WhatsApp's 24-hour session (the lead has not written in a day)",
    "past": "its time was before the enrollment",
    "window": "its sending window never opens (or its anchor has passed)",
    "reaction": "skipped by a reaction to an event",
    "removed": "the step was removed from the sequence",
    "anchor": "the sequence's anchor time is missing or past",
    "erased": "the person was erased",
    "retired": "the sequence was retired",
}
FAILED = {
    "render_error": "the template could not be rendered",
    "too_long": "the text is longer than the SMS parts allowed",
    "temporary": "the provider kept failing; gave up after the last retry",
    "no_sender": "no sender is configured for the channel",
    "smtputf8": "the mail relay does not take this non-ASCII address",
    "contact": "the CRM refused the contact",
}
HELD = {
    "sequence_paused": ("the sequence is paused", "until it is resumed"),
    "sends_paused": ("all sends are on hold (the incident switch)", "until they are released"),
    "sequence_missing": ("its sequence file is missing", "until the file is back"),
    "paused": ("paused", "until resumed"),
}
"""Holds without an end of their own: the step waits for a person, whatever its due time."""
SUPPRESSIONS = {
    "unsubscribed": "unsubscribed",
    "link": "unsubscribed by the link in a message",
    "mailto": "unsubscribed by email",
    "bounced": "the address bounced",
    "complaint": "marked a message as spam",
    "stop": "texted STOP",
    "invalid_number": "the number cannot receive messages",
}
EXITS = {
    "manual": "ended by hand",
    "reenrolled": "ended: enrolled again",
    "retired": "ended: the sequence was retired",
    "erased": "ended: the person was erased",
    "crm": "ended from the CRM",
    "goal": "ended: reached its goal",
}
IN_DOUBT = (
    "in doubt: handed to the provider, its answer never recorded — never resent by itself "
    "(see docs/operations.md, `unknown`)"
)
DELIVERY = {
    "accepted": "accepted by the provider",
    "queued": "queued at the provider",
    "sent": "sent by the provider",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "not delivered",
    "failed": "failed at the provider",
    "bounced": "bounced",
    "complaint": "marked as spam",
}


def skipped(
    code: str,
    channel: str | None,
    *,
    suppression: str | None = None,
    consent: bool | None = None,
    condition: str | None = None,
) -> str:
    """Why a step was skipped: `suppressed` is told apart by what the lead holds now (a
    suppression on the channel, or no consent to text)."""
    noun = CHANNEL_NAMES.get(channel or "", channel or "the channel")
    if code == "suppressed":
        if suppression is not None:
            return f"skipped: {noun} suppressed ({suppression_words(suppression)})"
        if channel in ("sms", "whatsapp") and consent is not True:
            return f"skipped: no {noun} consent"
        if channel == "email" and consent is False:
            return "skipped: no email consent"
        return f"skipped: {noun} suppressed or without consent at the time"
    if code == "condition" and condition:
        return f"skipped: its condition said no ({condition})"
    if code == "no_address":
        address = "email address" if channel == "email" else "phone number"
        return "skipped: " + SKIPPED[code].format(address=address)
    if code in SKIPPED:
        return f"skipped: {SKIPPED[code]}"
    return f"skipped: {code}"


def failed(code: str) -> str:
    if code in FAILED:
        return f"failed: {FAILED[code]}"
    if code.isdigit():
        return f"failed: the provider refused it for good ({code})"
    return f"failed: {code}"


def held(code: str, channel: str | None, caps: Caps, goes_out: str | None) -> str:
    """Why a pending step waits, and when it goes out (None: until someone resumes it)."""
    if code in HELD:
        words, until = HELD[code]
        return f"held: {words} — {until}"
    when = f" — goes out {goes_out}" if goes_out else " — until resumed"
    if code == "cap":
        return f"held: frequency cap, {cap_words(caps, channel)}{when}"
    if code == "window":
        quiet = " or quiet hours" if channel in ("sms", "whatsapp") else ""
        return f"held: outside the sending window{quiet}{when}"
    if code.startswith("retry:"):
        why = code.removeprefix("retry:").strip()
        return f"retrying: {why}" + (f" — next try {goes_out}" if goes_out else "")
    return f"held: {code}{when}"


def cap_words(caps: Caps, channel: str | None) -> str:
    """`2 emails in 24 h`: the channel's own cap, else the cap over every channel."""
    own = getattr(caps, channel, None) if channel in MESSAGES else None
    cap, nouns = (own, MESSAGES[channel or ""]) if own else (caps.all, ("message", "messages"))
    if cap is None:
        return "too many messages lately"
    noun = nouns[0] if cap.max == 1 else nouns[1]
    return f"{cap.max} {noun} in {span_words(cap.per.approximate())}"


def span_words(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


def suppression_words(code: str) -> str:
    return SUPPRESSIONS.get(code, code)


def exit_words(code: str | None, status: str) -> str | None:
    if status == "completed":
        return "completed"
    if code is None:
        return None
    return EXITS.get(code, f"ended by the event {code}")


def delivery_words(status: str) -> str:
    return DELIVERY.get(status, status)
