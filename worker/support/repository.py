"""Everything held on one lead, read for an export or scrubbed for an erasure.

Erasure keeps every row with its id, status and times, so counts and funnels still add up; it
clears what names or describes the person: identities, names, attributes, consent, score
entries, message addresses, subjects, bodies and copies, event properties (all but the keys
that tie engagement to a step run), enrolling events and pause notes. The lead's CRM outbox entries
(copies of its identities) are deleted. Event idempotency keys stay: they are the sender's
opaque ids, and a replayed webhook must not bring the person back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, null, select, update
from sqlmodel import Session, SQLModel, col

from worker.store import counters
from worker.store.messages import unpack_copy
from worker.store.tables import (
    CrmChangeRow,
    EnrollmentRow,
    EventRow,
    LeadRow,
    MessageRow,
    StepRunRow,
    TimelineRow,
)

KEPT_PROPERTIES = ("sequence", "step", "step_run", "channel", "variant")
"""Event properties that say which message an open, click, reply or unsubscribe belongs to
(what the funnel counts), and nothing about the person."""
ERASED = "[erased]"
IN_FLIGHT = ("pending", "queued", "claimed")
"""Steps not yet handed to a provider: `sending` is already on its way and cannot be recalled."""
_NO_SYNC = {"synchronize_session": False}


@dataclass(frozen=True)
class Held:
    events: list[EventRow]
    enrollments: list[EnrollmentRow]
    step_runs: list[StepRunRow]
    messages: list[MessageRow]
    timeline: list[TimelineRow]
    crm_changes: list[CrmChangeRow]


def _all(session: Session, table: type[Any], order: Any, lead_id: str) -> list[Any]:
    statement = select(table).where(table.lead_id == lead_id).order_by(order)
    return list(session.execute(statement).scalars())


def held(session: Session, lead_id: str) -> Held:
    """Every row that belongs to the lead, oldest first."""
    return Held(
        events=_all(session, EventRow, col(EventRow.occurred_at), lead_id),
        enrollments=_all(session, EnrollmentRow, col(EnrollmentRow.enrolled_at), lead_id),
        step_runs=_all(session, StepRunRow, col(StepRunRow.position), lead_id),
        messages=_all(session, MessageRow, col(MessageRow.sent_at), lead_id),
        timeline=_all(session, TimelineRow, col(TimelineRow.id), lead_id),
        crm_changes=_all(session, CrmChangeRow, col(CrmChangeRow.id), lead_id),
    )


def as_json(row: SQLModel) -> dict[str, Any]:
    found: dict[str, Any] = row.model_dump(mode="json")
    return found


def message_json(row: MessageRow) -> dict[str, Any]:
    """A message with the copy of the email as sent, unpacked (`copy`: subject, text, html)."""
    found: dict[str, Any] = row.model_dump(mode="json", exclude={"sent_copy"})
    kept = unpack_copy(row.sent_copy) if row.sent_copy is not None else None
    found["copy"] = asdict(kept) if kept is not None else None
    return found


def identities(row: LeadRow) -> list[str]:
    """The strings that name the person, to find them in free text (provider errors)."""
    found = [row.email, row.phone, row.external_id, row.first_name, row.last_name]
    return [value for value in found if value and len(value) >= 3]


def forget_lead(row: LeadRow, now: datetime) -> None:
    """The lead row keeps its id, suppressions and times; everything about the person goes."""
    row.email = row.phone = row.external_id = None
    row.first_name = row.last_name = row.timezone = None
    row.search_name = row.search_last = None
    row.attributes, row.consent, row.score, row.history = {}, {}, {}, []
    row.segment = None
    row.pause = None
    row.last_activity_at = row.last_inbound_whatsapp_at = row.wake_at = None
    row.erased = True
    row.updated_at = now


def scrub(session: Session, lead_id: str, names: list[str], now: datetime) -> None:
    """Clear the person from every row of the lead but the lead row itself (flush that
    first: these are bulk statements)."""
    counters.runs_erased(session, lead_id, IN_FLIGHT, now)  # skipped (erased), counted
    counters.flush(session)
    session.execute(
        update(StepRunRow)
        .where(col(StepRunRow.lead_id) == lead_id, col(StepRunRow.status).in_(IN_FLIGHT))
        .values(status="skipped", reason="erased", due_at=None, finished_at=now, lease_until=None)
        .execution_options(**_NO_SYNC)
    )
    session.execute(
        update(StepRunRow)
        .where(col(StepRunRow.lead_id) == lead_id)
        .values(event=null())
        .execution_options(**_NO_SYNC)
    )
    session.execute(
        update(EnrollmentRow)
        .where(col(EnrollmentRow.lead_id) == lead_id)
        .values(event=null(), key=None, events_seen=[], pause=null())
        .execution_options(**_NO_SYNC)
    )
    session.execute(
        update(MessageRow)
        .where(col(MessageRow.lead_id) == lead_id)
        .values(to=None, subject=None, body=None, sent_copy=None)
        .execution_options(**_NO_SYNC)
    )
    session.execute(
        update(TimelineRow)
        .where(col(TimelineRow.lead_id) == lead_id)
        .values(subject=None)
        .execution_options(**_NO_SYNC)
    )
    session.execute(
        delete(CrmChangeRow)
        .where(col(CrmChangeRow.lead_id) == lead_id)
        .execution_options(**_NO_SYNC)
    )
    _trim_event_properties(session, lead_id)
    for name in names:
        _scrub_text(session, lead_id, name)


def _trim_event_properties(session: Session, lead_id: str) -> None:
    """Keep only KEPT_PROPERTIES: one lead's events, rewritten in one executemany."""
    rows = session.execute(
        select(col(EventRow.id), col(EventRow.properties)).where(col(EventRow.lead_id) == lead_id)
    ).all()
    changed = []
    for event_id, properties in rows:
        kept = {k: v for k, v in (properties or {}).items() if k in KEPT_PROPERTIES}
        if kept != properties:
            changed.append({"id": event_id, "properties": kept})
    if changed:
        session.execute(update(EventRow), changed)  # ORM bulk update by primary key


def _scrub_text(session: Session, lead_id: str, name: str) -> None:
    """A free-text reason that quotes the person (an SMTP 550 names the address) is replaced
    whole: a provider may quote it in another case."""
    needle = name.lower()
    for table, column in (
        (StepRunRow, StepRunRow.reason),
        (TimelineRow, TimelineRow.reason),
        (EnrollmentRow, EnrollmentRow.exit_reason),
    ):
        session.execute(
            update(table)
            .where(
                col(table.lead_id) == lead_id,
                func.lower(col(column)).contains(needle, autoescape=True),
            )
            .values({column: ERASED})
            .execution_options(**_NO_SYNC)
        )
