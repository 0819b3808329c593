"""The event intake: events answered early (`Prefer: respond-async`), held durably until they
are applied in arrival order. A row is deleted in the transaction that applies its event, so
each is applied exactly once; one the database refuses stays, marked failed, for an operator.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, String, Text, delete, func, select, text, update
from sqlmodel import Field, Session, SQLModel, col

from worker.store.tables import UTCDateTime

DRAIN_LOCK = 7_160_016
"""The PostgreSQL advisory lock one drainer holds while it applies (any fixed number)."""


class IntakeRow(SQLModel, table=True):
    __tablename__ = "event_intake"

    id: int | None = Field(default=None, primary_key=True)
    """Arrival order: rows are applied by it."""
    event_id: str = Field(max_length=32, unique=True)
    """The id the early answer gave: the event is stored under it."""
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200), unique=True))
    source: str = Field(max_length=40)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    failed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    error: str | None = Field(default=None, sa_column=Column(Text))


def add_queued(session: Session, rows: Iterable[dict[str, Any]]) -> None:
    """Insert intake rows (event_id, idempotency_key, source, payload, received_at)."""
    values = list(rows)
    if values:
        session.execute(IntakeRow.__table__.insert(), values)  # type: ignore[attr-defined]


def queued_by_keys(session: Session, keys: Iterable[str]) -> dict[str, str]:
    """Idempotency key → event id of the events still queued, in one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    found = session.execute(
        select(col(IntakeRow.idempotency_key), col(IntakeRow.event_id)).where(
            col(IntakeRow.idempotency_key).in_(wanted)
        )
    ).all()
    return {key: event_id for key, event_id in found if key is not None}


def hold_drain(session: Session) -> bool:
    """Become the one drainer for this transaction. PostgreSQL: a transaction-level advisory
    lock (False when another drainer holds it). SQLite: every transaction already begins
    IMMEDIATE, so drainers take turns."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    held = session.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": DRAIN_LOCK})
    return bool(held.scalar_one())


def oldest_queued(session: Session, limit: int) -> list[IntakeRow]:
    """The first `limit` rows in arrival order that have not failed."""
    statement = (
        select(IntakeRow)
        .where(col(IntakeRow.failed_at).is_(None))
        .order_by(col(IntakeRow.id))
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def remove_queued(session: Session, ids: Iterable[int]) -> None:
    wanted = list(ids)
    if wanted:
        session.execute(delete(IntakeRow).where(col(IntakeRow.id).in_(wanted)))


def mark_failed(session: Session, row_id: int, now: datetime, error: str) -> None:
    session.execute(
        update(IntakeRow)
        .where(col(IntakeRow.id) == row_id)
        .values(failed_at=now, error=error[:2000])
    )


def queued_count(session: Session) -> int:
    found = session.execute(
        select(func.count()).select_from(IntakeRow).where(col(IntakeRow.failed_at).is_(None))
    )
    return int(found.scalar_one())


def failed_count(session: Session) -> int:
    """Queued events the database refused when they were applied (they stay, with the error)."""
    found = session.execute(
        select(func.count()).select_from(IntakeRow).where(col(IntakeRow.failed_at).is_not(None))
    )
    return int(found.scalar_one())
