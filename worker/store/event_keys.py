"""Idempotency keys that outlive their events, and the pruning of old events.

An event's key (its `id`, a vendor's delivery id, an open's once-per-message key) is the
`idempotency_key` of its row while the event is kept. When retention deletes the event, the key
moves, in the same transaction, to the slim `event_keys` table (key, event id, lead id, when
the event arrived), kept `idempotency_retention_days` after arrival: a vendor's late retry still
finds it and answers `duplicate` with the original ids. Ingest writes nothing more than before;
`find_by_keys` (store/events.py) reads both places in one statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    String,
    bindparam,
    delete,
    func,
    select,
    text,
    union_all,
)
from sqlmodel import Field, Session, SQLModel, col

from worker.store.steps import db_time
from worker.store.tables import EventRow, UTCDateTime


class EventKeyRow(SQLModel, table=True):
    __tablename__ = "event_keys"
    __table_args__ = (  # BRIN on PostgreSQL: keys move here in arrival order
        Index("ix_event_keys_created_at", "created_at", postgresql_using="brin"),
    )

    key: str = Field(sa_column=Column(String(200), primary_key=True))
    event_id: str = Field(max_length=32)
    lead_id: str = Field(max_length=32)
    created_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    """When the event arrived (its `received_at`)."""


def stored_keys(session: Session, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Key → (event id, lead id), from the kept events and the keys of pruned ones, in one
    statement (one snapshot: a key moving between the two at that moment is seen once)."""
    if not keys:
        return {}
    kept: Any = select(
        col(EventRow.idempotency_key).label("key"), col(EventRow.id), col(EventRow.lead_id)
    ).where(col(EventRow.idempotency_key).in_(keys))
    pruned = select(
        col(EventKeyRow.key), col(EventKeyRow.event_id), col(EventKeyRow.lead_id)
    ).where(col(EventKeyRow.key).in_(keys))
    rows = session.execute(union_all(kept, pruned)).all()
    return {key: (event_id, lead_id) for key, event_id, lead_id in rows}


def oldest_event(session: Session) -> datetime | None:
    """When the oldest stored event arrived (a scan without a B-tree on arrival: only for a
    first run of retention, which then keeps where it got to)."""
    found: datetime | None = session.execute(
        select(func.min(col(EventRow.received_at)))
    ).scalar_one()
    return found


def prune_events(
    session: Session,
    window: tuple[datetime, datetime],
    keys_after: datetime,
    kept_types: Iterable[str],
    limit: int,
) -> int:
    """Delete up to `limit` events that arrived in `window` [from, until) (not of
    `kept_types`); the keys of those that arrived after `keys_after` move to `event_keys`.
    How many went. A window keeps each search short: the BRIN index on arrival finds only its
    pages, not every page a deleted batch left behind."""
    ids = list(
        session.execute(
            select(col(EventRow.id))
            .where(
                col(EventRow.received_at) >= window[0],
                col(EventRow.received_at) < window[1],
                col(EventRow.type).not_in(sorted(kept_types)),
            )
            .limit(limit)
        ).scalars()
    )
    if not ids:
        return 0
    moved = text(
        "INSERT INTO event_keys (key, event_id, lead_id, created_at) "
        "SELECT idempotency_key, id, lead_id, received_at FROM events "
        "WHERE id IN :ids AND idempotency_key IS NOT NULL AND received_at >= :keys_after "
        "ON CONFLICT (key) DO NOTHING"
    ).bindparams(bindparam("ids", expanding=True))
    session.execute(moved, {"ids": ids, "keys_after": db_time(session, keys_after)})
    session.execute(
        delete(EventRow)
        .where(col(EventRow.id).in_(ids))
        .execution_options(synchronize_session=False)
    )
    return len(ids)


def prune_keys(session: Session, before: datetime, limit: int) -> int:
    """Delete up to `limit` keys of pruned events that arrived before `before`."""
    keys = list(
        session.execute(
            select(col(EventKeyRow.key)).where(col(EventKeyRow.created_at) < before).limit(limit)
        ).scalars()
    )
    if keys:
        session.execute(
            delete(EventKeyRow)
            .where(col(EventKeyRow.key).in_(keys))
            .execution_options(synchronize_session=False)
        )
    return len(keys)


def key_count(session: Session) -> int:
    found: Any = session.execute(text("SELECT count(*) FROM event_keys")).scalar_one()
    return int(found)
