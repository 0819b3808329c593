"""Looking leads up: by identity (external_id, then email case-insensitive, then phone), by
sequence, by wake time, by what support types into the console's search; a lead's messages
and recent events for the views of a lead."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, func, select
from sqlalchemy.orm import QueryableAttribute, defer
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
    """The lead's newest messages, without the stored copies (read one with its own query)."""
    rows = session.execute(
        select(MessageRow)
        .options(defer(cast("QueryableAttribute[Any]", MessageRow.sent_copy)))
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


# -- the console's search --------------------------------------------------------------------

NAME_LENGTH = 410
HIGHEST = chr(0x10FFFF)
"""Above every character: `p <= name < p + HIGHEST` holds exactly the names starting with p
(code point order is UTF-8 byte order, which SQLite's BINARY and PostgreSQL's "C" collation
compare by), so a prefix is a range scan of the index on both databases."""


def name_key(text: str) -> str:
    """A name as it is searched: case-folded, single spaces."""
    return " ".join(text.casefold().split())


def search_names(first: str | None, last: str | None) -> tuple[str | None, str | None]:
    """What the search finds a lead's name by: "first last" (a prefix of it is a prefix of
    the first name, or of the whole name) and the last name alone."""
    whole = name_key(" ".join(part for part in (first, last) if part))
    family = name_key(last or "")
    return (whole[:NAME_LENGTH] or None, family[:NAME_LENGTH] or None)


def set_search_names(row: LeadRow) -> None:
    """Keep the searchable name columns in step with the names (ingest, erasure)."""
    row.search_name, row.search_last = search_names(row.first_name, row.last_name)


@dataclass(frozen=True)
class SearchTerms:
    """What one query may be; None for a kind it cannot be."""

    email: str | None = None
    phone: str | None = None
    external_id: str | None = None
    lead_id: str | None = None
    name_prefix: str | None = None

    def kinds(self) -> list[str]:
        names = ("email", "phone", "external_id", "lead_id", "name_prefix")
        return [name for name in names if getattr(self, name)]


def search_leads(session: Session, terms: SearchTerms, limit: int) -> list[LeadRow]:
    """Leads matching any term, at most `limit`: exact identities first, then names in
    alphabetical order. Each lookup reads an index and at most `limit` rows."""
    found: dict[str, LeadRow] = {}
    exact = (
        (col(LeadRow.email), terms.email),
        (col(LeadRow.phone), terms.phone),
        (col(LeadRow.external_id), terms.external_id),
        (col(LeadRow.id), terms.lead_id),
    )
    for column, value in exact:
        if value:
            for row in session.execute(select(LeadRow).where(column == value)).scalars():
                found.setdefault(row.id, row)
    prefix = terms.name_prefix
    if prefix:
        named: list[LeadRow] = []
        for column in (col(LeadRow.search_name), col(LeadRow.search_last)):
            statement = (
                select(LeadRow)
                .where(column >= prefix, column < prefix + HIGHEST)
                .order_by(column)
                .limit(limit)
            )
            named.extend(session.execute(statement).scalars())
        for row in sorted(named, key=lambda r: (r.search_name or "", r.id)):
            found.setdefault(row.id, row)
    return list(found.values())[:limit]


def active_enrollment_counts(session: Session, lead_ids: Sequence[str]) -> dict[str, int]:
    """Active enrollments per lead, for the leads given (one grouped query)."""
    if not lead_ids:
        return {}
    rows = session.execute(
        select(col(EnrollmentRow.lead_id), func.count())
        .where(col(EnrollmentRow.lead_id).in_(list(lead_ids)))
        .where(col(EnrollmentRow.status) == "active")
        .group_by(col(EnrollmentRow.lead_id))
    ).all()
    return {str(lead_id): int(count) for lead_id, count in rows}
