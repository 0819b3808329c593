"""Samples for previews: the sample lead (Ana Ito) and its context, and a template rendered for
a person to read."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from worker.kit.clock import utcnow
from worker.rendering.templates import Channel, RenderedEmail, Templates
from worker.rendering.text import sms_segments

LEAD_FIELDS = (
    "email",
    "phone",
    "external_id",
    "first_name",
    "last_name",
    "timezone",
    "score",
    "segment",
    "consent",
    "attributes",
)
SAMPLE_UNSUBSCRIBE_URL = "https://example.com/u/sample"

_SAMPLE_LEAD: dict[str, Any] = {
    "email": "ana@example.com",
    "phone": "+4915112345678",
    "first_name": "Ana",
    "last_name": "Ito",
    "timezone": "Europe/Berlin",
    "score": 0,
    "segment": None,
    "attributes": {},
    "consent": {"email": True, "sms": True},
}


def sample_context(
    lead: Mapping[str, Any] | None = None,
    *,
    sequence: str = "sample",
    step: str = "sample",
    now: datetime | None = None,
) -> dict[str, Any]:
    """A context for previews: the sample lead (Ana Ito) overridden by `lead`."""
    moment = now if now is not None else utcnow()
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware, e.g. datetime.now(UTC)")
    return {
        "lead": _sample_lead(lead or {}),
        "event": {"type": "sample", "properties": {}, "occurred_at": moment},
        "sequence": {"id": sequence, "name": sequence},
        "step": {"id": step},
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE_URL,
        "now": moment,
    }


def render_preview(
    templates: Templates, channel: Channel, name: str, context: Mapping[str, Any]
) -> str:
    """A human-readable rendering of one template, for the CLI and reviews."""
    if channel == "email":
        return _email_preview(templates.render_email(name, context))
    body = templates.render_text(channel, name, context)
    if channel != "sms":
        return body
    count = sms_segments(body)
    return f"{body}\n\n({count} segment{'' if count == 1 else 's'})"


def _sample_lead(lead: Mapping[str, Any]) -> dict[str, Any]:
    """The sample lead with `lead` on top; consent and attributes merge key by key."""
    given = copy.deepcopy(dict(lead))
    merged = {**dict.fromkeys(LEAD_FIELDS), **copy.deepcopy(_SAMPLE_LEAD), **given}
    for key in ("consent", "attributes"):
        if isinstance(given.get(key), Mapping):
            merged[key] = {**_SAMPLE_LEAD[key], **given[key]}
    return merged


def _email_preview(email: RenderedEmail) -> str:
    lines = [f"Subject: {email.subject}"]
    if email.preheader:
        lines.append(f"Preheader: {email.preheader}")
    if email.from_address:
        lines.append(f"From: {email.from_address}")
    if email.reply_to:
        lines.append(f"Reply-To: {email.reply_to}")
    lines += ["--- text ---", email.text, "--- html ---", email.html]
    return "\n".join(lines)
