"""Unsubscribe and resubscribe from a signed link (the `/u/{token}` page and RFC 8058 one-click):
what the token names, where the lead stands, and the change applied like any event, with an
idempotency key numbered by the lead's earlier changes (a repeated or concurrent POST is a
duplicate; a later change of mind is not).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from worker.ingest.intake import apply
from worker.ingest.schemas import EventIn, LeadIn
from worker.kit.signing import verify
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.events import lead_event_count
from worker.store.tables import LeadRow

CHANGES = ("unsubscribed", "resubscribed")
RESUBSCRIBABLE = frozenset({"link", "unsubscribed"})
"""Suppressions a person may lift from the page; a bounce or an SMS STOP is not theirs to
lift here (the address failed; the carrier keeps STOP until START)."""
LABELS = {"email": "emails", "sms": "text messages", "whatsapp": "WhatsApp messages"}


@dataclass(frozen=True)
class Subscription:
    """What an unsubscribe token names, and where the lead stands now."""

    lead_id: str
    channel: str
    address: str | None
    suppressed: str | None
    """The suppression reason for the channel, None while subscribed."""
    erased: bool
    identity: dict[str, str]
    changes: int
    step_run: str | None = None


def subscription(runtime: Runtime, token: str) -> Subscription | None:
    """The lead and channel a genuine unsubscribe token names; None for anything else (a
    tracking token is not an unsubscribe token)."""
    data = verify(runtime.config, token)
    if data is None or "k" in data:
        return None
    lead_id, channel = data.get("l"), data.get("c")
    if not isinstance(lead_id, str) or channel not in LABELS:
        return None
    step_run = data.get("r") if isinstance(data.get("r"), str) else None
    with transaction(runtime.database) as session:
        row = session.get(LeadRow, lead_id)
        if row is None:
            return None
        identity = {
            name: value
            for name in ("external_id", "email", "phone")
            if (value := getattr(row, name))
        }
        return Subscription(
            lead_id=row.id,
            channel=str(channel),
            address=row.email if channel == "email" else row.phone,
            suppressed=row.suppressions.get(str(channel)),
            erased=row.erased,
            identity=dict(list(identity.items())[:1]),  # the one it is found by first
            changes=lead_event_count(session, row.id, CHANGES),
            step_run=step_run,
        )


def change(
    runtime: Runtime, token: str, resubscribe: bool
) -> tuple[Subscription | None, str | None]:
    """Unsubscribe (or resubscribe) when that changes something; the state afterwards and
    the kind of event recorded, if any."""
    found = subscription(runtime, token)
    if found is None or found.erased or not found.identity:
        return found, None
    kind = None
    if resubscribe and found.suppressed in RESUBSCRIBABLE:
        kind = "resubscribed"
    elif not resubscribe and found.suppressed is None:
        kind = "unsubscribed"
    if kind is None:
        return found, None
    _record_change(runtime, token, found, kind)
    return subscription(runtime, token), kind


def _record_change(runtime: Runtime, token: str, found: Subscription, kind: str) -> None:
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    properties: dict[str, Any] = {"channel": found.channel, "reason": "link"}
    if found.step_run:
        properties["step_run"] = found.step_run
    event = EventIn(
        id=f"nurture:{kind}:{digest}:{found.changes}",
        type=kind,
        lead=LeadIn.model_validate(found.identity),
        properties=properties,
    )
    apply(runtime, event, source="unsubscribe")
