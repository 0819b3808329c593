"""Every query of the mailbox poller: its position per mailbox (UIDVALIDITY + last UID, which
only moves forward), the claim on each message it reads, and the look-ups that match a message
to the step run and lead it answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from worker.store import counters
from worker.store.tables import (
    InboxMessageRow,
    InboxPositionRow,
    LeadRow,
    MessageRow,
    StepRunRow,
)


def position(session: Session, mailbox: str) -> tuple[int, int] | None:
    """(UIDVALIDITY, last UID) where the last poll of this mailbox stopped."""
    row = session.execute(
        select(col(InboxPositionRow.uidvalidity), col(InboxPositionRow.last_uid)).where(
            col(InboxPositionRow.mailbox) == mailbox
        )
    ).first()
    return (int(row[0]), int(row[1])) if row is not None else None


def advance(session: Session, mailbox: str, uidvalidity: int, uid: int, now: datetime) -> None:
    """Move the position to `uid`, never back: a slower poller that finishes later leaves the
    position where a faster one put it. A new UIDVALIDITY starts the folder over."""
    values = {"mailbox": mailbox, "uidvalidity": uidvalidity, "last_uid": uid, "updated_at": now}
    session.execute(_insert(session, InboxPositionRow, values, ["mailbox"]))
    session.execute(
        update(InboxPositionRow)
        .where(
            col(InboxPositionRow.mailbox) == mailbox,
            or_(
                col(InboxPositionRow.uidvalidity) != uidvalidity,
                col(InboxPositionRow.last_uid) < uid,
            ),
        )
        .values(uidvalidity=uidvalidity, last_uid=uid, updated_at=now)
    )


def claim(session: Session, mailbox: str, uidvalidity: int, uid: int, now: datetime) -> int | None:
    """Insert the message's row on its unique key; None when another poll has it already.

    On PostgreSQL a second poll's insert waits for the first one's transaction and then finds
    the row; SQLite runs the two transactions one after the other."""
    values = {
        "mailbox": mailbox,
        "uidvalidity": uidvalidity,
        "uid": uid,
        "kind": "claimed",
        "received_at": now,
    }
    statement = _insert(
        session, InboxMessageRow, values, ["mailbox", "uidvalidity", "uid"]
    ).returning(col(InboxMessageRow.id))
    found = session.execute(statement).scalar_one_or_none()
    return int(found) if found is not None else None


def record(session: Session, claimed: int, **values: Any) -> None:
    """What the claimed message turned out to be (kind, match, event, detail)."""
    session.execute(
        update(InboxMessageRow).where(col(InboxMessageRow.id) == claimed).values(**values)
    )


def step_run(session: Session, step_run_id: str) -> StepRunRow | None:
    return session.get(StepRunRow, step_run_id)


def lead(session: Session, lead_id: str) -> LeadRow | None:
    return session.get(LeadRow, lead_id)


def last_email_sent(session: Session, lead_id: str) -> StepRunRow | None:
    """The lead's latest email: the step a reply by sender address answers (last touch)."""
    found: StepRunRow | None = (
        session.execute(
            select(StepRunRow)
            .where(
                col(StepRunRow.lead_id) == lead_id,
                col(StepRunRow.channel) == "email",
                col(StepRunRow.sent_at).is_not(None),
            )
            .order_by(col(StepRunRow.sent_at).desc())
            .limit(1)
        )
        .scalars()
        .first()
    )
    return found


def mark_message(session: Session, step_run_id: str, status: str, now: datetime) -> None:
    """The sent message's delivery status after a bounce or a complaint."""
    counters.messages_marked(session, step_run_id, status)  # a delivery taken back
    counters.flush(session)
    session.execute(
        update(MessageRow)
        .where(col(MessageRow.step_run_id) == step_run_id)
        .values(status=status, updated_at=now)
    )


def _insert(session: Session, table: type[Any], values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING on the given unique key."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(table).values(values).on_conflict_do_nothing(index_elements=keys)
