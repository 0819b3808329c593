"""Stored events: the raw record of everything that happened to a lead, idempotent on id."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from worker.engine.state import Event
from worker.kit.ids import new_id
from worker.store.deferred import deferred
from worker.store.event_keys import stored_keys
from worker.store.tables import EventRow


def find_by_keys(session: Session, idempotency_keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Idempotency key → (event id, lead id) of the events already stored, in one query; an
    event pruned by retention still answers through its kept key (store/event_keys.py)."""
    return stored_keys(session, sorted(set(idempotency_keys)))


def store_event(
    session: Session,
    lead_id: str,
    event: Event,
    now: datetime,
    source: str,
    idempotency_key: str | None = None,
    event_id: str | None = None,
) -> str:
    """The stored event's id: `event_id` when one was fixed earlier (an early answer gave it),
    else a new one."""
    event_id = event_id or new_id()
    values: dict[str, Any] = {
        "id": event_id,
        "idempotency_key": idempotency_key,
        "lead_id": lead_id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "received_at": now,
        "properties": event.properties,
        "source": source,
    }
    writes = deferred(session)
    if writes is not None:
        writes.insert(EventRow, values)
    else:
        session.add(EventRow(**values))
    return event_id


def lead_event_count(session: Session, lead_id: str, types: tuple[str, ...]) -> int:
    """How many events of these types the lead has had (the unsubscribe page numbers its
    changes with it, so a repeated click is a duplicate and a later change is not)."""
    found = session.execute(
        select(func.count())
        .select_from(EventRow)
        .where(col(EventRow.lead_id) == lead_id, col(EventRow.type).in_(types))
    ).scalar_one()
    return int(found)
