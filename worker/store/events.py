"""Stored events: the raw record of everything that happened to a lead, idempotent on id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from worker.engine.state import Event
from worker.store.tables import EventRow
from worker.store.worlds import new_id


def find_by_key(session: Session, idempotency_key: str) -> EventRow | None:
    found: EventRow | None = session.execute(
        select(EventRow).where(col(EventRow.idempotency_key) == idempotency_key)
    ).scalar_one_or_none()
    return found


def store_event(
    session: Session,
    lead_id: str,
    event: Event,
    now: datetime,
    source: str,
    idempotency_key: str | None = None,
) -> str:
    event_id = new_id()
    session.add(
        EventRow(
            id=event_id,
            idempotency_key=idempotency_key,
            lead_id=lead_id,
            type=event.type,
            occurred_at=event.occurred_at,
            received_at=now,
            properties=event.properties,
            source=source,
        )
    )
    return event_id
