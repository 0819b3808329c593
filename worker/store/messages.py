"""Sent messages as providers know them: found by the provider's id, their delivery status
kept up to date by status callbacks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from worker.store.tables import MessageRow


def find_by_provider_id(
    session: Session, provider_message_id: str, *, lock: bool = False
) -> MessageRow | None:
    """The message a provider id names (the earliest, should a provider ever reuse one).

    With `lock`, the row is locked and re-read from the database: taken under the lead's lock,
    it shows what a concurrent callback committed, not what this session saw before."""
    statement = (
        select(MessageRow)
        .where(col(MessageRow.provider_message_id) == provider_message_id)
        .order_by(col(MessageRow.sent_at), col(MessageRow.id))
        .limit(1)
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    found: MessageRow | None = session.execute(statement).scalars().first()
    return found


def set_status(session: Session, row: MessageRow, status: str, now: datetime) -> None:
    row.status = status
    row.updated_at = now
    session.add(row)
