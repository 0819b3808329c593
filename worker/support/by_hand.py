"""Support's hand on one lead found by its id (the console): enroll it, unsubscribe or
resubscribe a channel, export its data. Each goes through the service the API uses and is
recorded in the audit log with who did it and why; pause, resume and exit are service.py's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from worker.accounts.audit import record_action
from worker.ingest.intake import atomically
from worker.ingest.repository import lead_identity
from worker.ingest.schemas import EventIn, LeadIn
from worker.ingest.service import ingest
from worker.kit.clock import utcnow
from worker.kit.errors import Conflict, InvalidInput, NotFound
from worker.kit.ids import new_id
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.tables import LeadRow
from worker.support.enrollments import Answered, ManualEnrollment, enroll_by_hand
from worker.support.privacy import erase, export

CHANNELS = ("email", "sms", "whatsapp")
LIFTABLE = frozenset({"unsubscribed", "link", "mailto", "support"})
"""Suppressions support may lift: the person's own unsubscribes. A bounce, a spam complaint,
an SMS STOP or a dead number are not theirs to lift by hand."""


def identity_of(runtime: Runtime, lead_id: str) -> LeadIn:
    """The identity an event or an enrollment finds this lead by; NotFound for no lead,
    Conflict for an erased one (it hears nothing more)."""
    with transaction(runtime.database) as session:
        row = _lead(session, lead_id)
        identity = lead_identity(row)
    if identity is None:
        raise Conflict("this person was erased: nothing more can be done for them")
    return identity


def enroll_lead(
    runtime: Runtime,
    lead_id: str,
    sequence: str,
    properties: dict[str, Any],
    *,
    actor: str,
    reason: str | None = None,
) -> Answered:
    """`enroll_by_hand` for a lead by id: InvalidField names a missing key or anchor,
    Conflict the sequence's `reenroll:` rule, NotFound an unknown sequence."""
    request = ManualEnrollment(identity_of(runtime, lead_id), sequence, properties)
    return enroll_by_hand(runtime, request, actor=actor, reason=reason)


def change_subscription(
    runtime: Runtime, lead_id: str, channel: str, subscribe: bool, *, actor: str, reason: str | None
) -> bool:
    """Unsubscribe the lead from `channel`, or lift its unsubscribe; an event like any other
    (`unsubscribed` with reason `support`, or `resubscribed`), in one transaction with its
    record. False when it changed nothing (already so)."""
    if channel not in CHANNELS:
        raise InvalidInput(f"channel: one of {', '.join(CHANNELS)}, not {channel[:20]!r}")
    identity = identity_of(runtime, lead_id)

    def work(session: Session, now: datetime) -> bool:
        row = _lead(session, lead_id)
        current = row.suppressions.get(channel)
        if (current is None) is subscribe:
            return False
        if subscribe and current not in LIFTABLE:
            raise Conflict(
                f"{channel} is suppressed because {current}: that is not lifted by hand "
                "(a bounce, a spam complaint or an SMS STOP stays until the person acts)"
            )
        kind = "resubscribed" if subscribe else "unsubscribed"
        properties = {"channel": channel, **({} if subscribe else {"reason": "support"})}
        event = EventIn.model_validate(
            {"id": f"nurture:{kind}:support:{new_id()}", "type": kind, "properties": properties,
             "lead": identity.model_dump(exclude_none=True)}
        )  # fmt: skip
        ingest(session, runtime.engine, event, now, source="support")
        record_action(session, actor=actor, action=kind.removesuffix("d"), reason=reason,
                      lead_id=lead_id, target=channel, now=now)  # fmt: skip
        return True

    return atomically(runtime, work)


def export_lead(runtime: Runtime, lead_id: str, *, actor: str) -> dict[str, Any]:
    """Everything held on the lead (support/privacy.py), the export itself recorded."""
    found = export(runtime, lead_id)
    with transaction(runtime.database) as session:
        record_action(session, actor=actor, action="export", reason=None, lead_id=lead_id,
                      now=utcnow())  # fmt: skip
    return found


def erase_confirmed(
    runtime: Runtime, lead_id: str, typed: str, *, actor: str, reason: str | None
) -> None:
    """Erase the person (support/privacy.py) once `typed` is their email address or the
    lead's id, as the erase form asks; InvalidInput otherwise, and nothing changes."""
    with transaction(runtime.database) as session:
        row = _lead(session, lead_id)
        names = {row.id, (row.email or "").casefold()} - {""}
    if typed.strip().casefold() not in names and typed.strip() not in names:
        raise InvalidInput(
            "Confirm: type the lead's email address (or its id when it has none) to erase "
            "this person"
        )
    erase(runtime, lead_id, actor=actor, reason=reason)


def _lead(session: Session, lead_id: str) -> LeadRow:
    row = session.get(LeadRow, lead_id) if len(lead_id) <= 32 and "\x00" not in lead_id else None
    if row is None:
        raise NotFound(f"no lead {lead_id[:32]}")
    return row
