"""Looking leads up: by identity (external_id, then email case-insensitive, then phone), by
sequence, by wake time; a lead's messages and recent events for the views of a lead."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlmodel import Session, col

from worker.store.tables import EnrollmentRow, EventRow, LeadRow, MessageRow, StepRunRow


def find_lead(
    session: Session,
    *,
    external_id: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> LeadRow | None:
    for name, value in named_identities(external_id, email, phone):
        found: LeadRow | None = session.execute(
            select(LeadRow).where(getattr(LeadRow, name) == value)
        ).scalar_one_or_none()
        if found is not None:
            return found
    return None


IDENTITIES = ("external_id", "email", "phone")
"""In the order a lead is looked up by."""


def named_identities(
    external_id: str | None, email: str | None, phone: str | None
) -> list[tuple[str, str]]:
    """The identities given, in lookup order, as stored (emails in lower case)."""
    values = (external_id, email.lower() if email else None, phone)
    return [(name, value) for name, value in zip(IDENTITIES, values, strict=True) if value]


def lead_summary(row: LeadRow) -> dict[str, Any]:
    """Who the lead is: the identities and names every view of a lead starts with."""
    return {
        "id": row.id,
        "email": row.email,
        "phone": row.phone,
        "external_id": row.external_id,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "timezone": row.timezone,
    }


def leads_in_sequence(session: Session, sequence_id: str) -> list[str]:
    """Leads with an active enrollment in a sequence."""
    rows = session.execute(
        select(col(EnrollmentRow.lead_id))
        .where(col(EnrollmentRow.sequence_id) == sequence_id)
        .where(col(EnrollmentRow.status) == "active")
        .distinct()
    ).scalars()
    return list(rows)


def wake_query(now: datetime, limit: int, excluding: Collection[str] = ()) -> Select[LeadRow]:
    """The leads whose wake time has come, most overdue first, locked; rows another
    transaction holds are skipped (PostgreSQL), so overlapping ticks share the work.

    A range scan of `ix_leads_wake_at` in wake order: the cost does not grow with the number
    of leads waiting for a later time (bench/ticks.py)."""
    statement = select(LeadRow).where(col(LeadRow.wake_at) <= now)
    if excluding:
        statement = statement.where(col(LeadRow.id).not_in(sorted(excluding)))
    return statement.order_by(col(LeadRow.wake_at)).limit(limit).with_for_update(skip_locked=True)


def lock_leads_to_wake(
    session: Session, now: datetime, limit: int, excluding: Collection[str] = ()
) -> list[LeadRow]:
    """Leads that time alone changes now (a decaying score, a quiet spell, a pause ending),
    at most `limit`, locked for this transaction; none of `excluding`."""
    return list(session.execute(wake_query(now, limit, excluding)).scalars())


def lead_messages(session: Session, lead_id: str, limit: int = 100) -> list[MessageRow]:
    rows = session.execute(
        select(MessageRow)
        .where(col(MessageRow.lead_id) == lead_id)
        .order_by(col(MessageRow.sent_at).desc())
        .limit(limit)
    ).scalars()
    return list(rows)


def enrollment_steps(session: Session, lead_id: str) -> list[StepRunRow]:
    """Every step run of every enrollment of the lead, active or ended, in file order."""
    rows = session.execute(
        select(StepRunRow)
        .where(col(StepRunRow.lead_id) == lead_id, col(StepRunRow.enrollment_id).is_not(None))
        .order_by(col(StepRunRow.enrollment_id), col(StepRunRow.position))
    ).scalars()
    return list(rows)


def recent_events(session: Session, lead_id: str, limit: int = 50) -> list[EventRow]:
    rows = session.execute(
        select(EventRow)
        .where(col(EventRow.lead_id) == lead_id)
        .order_by(col(EventRow.occurred_at).desc())
        .limit(limit)
    ).scalars()
    return list(rows)


def find_leads(
    session: Session,
    *,
    email: str | None = None,
    phone: str | None = None,
    external_id: str | None = None,
) -> list[LeadRow]:
    statement = select(LeadRow)
    if email:
        statement = statement.where(col(LeadRow.email) == email.lower())
    if phone:
        statement = statement.where(col(LeadRow.phone) == phone)
    if external_id:
        statement = statement.where(col(LeadRow.external_id) == external_id)
    return list(session.execute(statement.limit(50)).scalars())
