"""Events in: store the event (idempotent on its id), find or merge the lead, run the engine
(scoring, exits, reactions, enrollments) and write every resulting step run — one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from worker.engine.core import Engine
from worker.ingest.repository import find_or_create, lock_leads_named
from worker.ingest.schemas import EventIn
from worker.kit.clock import utcnow
from worker.store.events import find_by_keys, store_event
from worker.store.locks import lock_lead
from worker.store.world_writes import deferred_writes
from worker.store.worlds import Loaded, load_world, load_worlds, new_world, refresh_lead
from worker.world.counting import event_stored
from worker.world.unit import finish


@dataclass(frozen=True)
class Arrival:
    """One event as it came in: from which source, and the event id an early answer already
    gave (`None`: a new one) with the time it was received then."""

    event: EventIn
    source: str = "api"
    event_id: str | None = None
    received_at: datetime | None = None


@dataclass(frozen=True)
class Ingested:
    event_id: str
    lead_id: str
    duplicate: bool = False
    enrolled: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Queued:
    """An event held in the intake (answered early): its id is fixed, its lead not yet known."""

    event_id: str
    duplicate: bool = False


def ingest(
    session: Session, engine: Engine, event_in: EventIn, now: datetime, *, source: str = "api"
) -> Ingested:
    """The caller's transaction commits; a concurrent duplicate id fails on the unique key."""
    return ingest_one(session, engine, Arrival(event_in, source), now)


def ingest_one(session: Session, engine: Engine, arrival: Arrival, now: datetime) -> Ingested:
    """`ingest` for an arrival (its source, and an event id fixed earlier)."""
    event_in, source = arrival.event, arrival.source
    if event_in.id is not None:
        seen = find_by_keys(session, [event_in.id]).get(event_in.id)
        if seen is not None:
            return Ingested(*seen, duplicate=True)
    lead_row = find_or_create(session, event_in.lead, now, source)
    session.flush()
    locked = lock_lead(session, lead_row.id)
    assert locked is not None
    applied = _decided_at(now)
    loaded = load_world(session, locked, applied)
    return _apply_one(session, engine, loaded, arrival, now, applied)


def ingest_batch(
    session: Session,
    engine: Engine,
    events_in: Sequence[EventIn],
    now: datetime,
    *,
    source: str = "api",
) -> list[Ingested]:
    """`ingest_arrivals` for events of one source."""
    return ingest_arrivals(session, engine, [Arrival(e, source) for e in events_in], now)


def ingest_arrivals(
    session: Session, engine: Engine, arrivals: Sequence[Arrival], now: datetime
) -> list[Ingested]:
    """`ingest` for many events in one transaction, with the same result item by item: in
    order, a repeated id (stored or earlier in the batch) a duplicate of the first, each lead
    found and merged as that item would find it, several events of one lead one after the
    other; every event goes through `finish()` like a single one (CRM outbox included). Reads
    and writes are set-based: one query for the ids, one locking the leads (in id order), three
    loading their worlds, and at the end one COPY (PostgreSQL; executemany elsewhere) per new
    table's rows and one executemany per table of changed rows."""
    keys = [a.event.id for a in arrivals if a.event.id is not None]
    seen = find_by_keys(session, keys)
    index = lock_leads_named(session, [a.event.lead for a in arrivals])
    applied = _decided_at(now)
    worlds = load_worlds(session, index.locked, applied)
    results: list[Ingested] = []
    with deferred_writes(session):
        for arrival in arrivals:
            event_in = arrival.event
            if event_in.id is not None and event_in.id in seen:
                event_id, lead_id = seen[event_in.id]
                results.append(Ingested(event_id, lead_id, duplicate=True))
                continue
            lead_row = index.find_or_create(session, event_in.lead, now, arrival.source)
            loaded = worlds.get(lead_row.id)
            if loaded is None:
                loaded = worlds[lead_row.id] = new_world(lead_row)
            else:
                refresh_lead(loaded)
            result = _apply_one(session, engine, loaded, arrival, now, applied)
            if event_in.id is not None:
                seen[event_in.id] = (result.event_id, result.lead_id)
            results.append(result)
    return results


def _decided_at(now: datetime) -> datetime:
    """Decisions carry the time they were made under the lock, not when the request arrived:
    an exit stamped before a claim that committed first would tell the story backwards."""
    return max(now, utcnow())


def _apply_one(
    session: Session,
    engine: Engine,
    loaded: Loaded,
    arrival: Arrival,
    now: datetime,
    applied: datetime,
) -> Ingested:
    """Store one event of a locked lead, run the engine on it and write what it decided."""
    lead_id = loaded.lead_row.id
    event_in, received = arrival.event, arrival.received_at or now
    event = event_in.to_event(received)
    event_id = store_event(
        session, lead_id, event, received, arrival.source, event_in.id, arrival.event_id
    )
    outcome = engine.apply_event(loaded.world, event, applied)
    enrolled, exited = list(outcome.enrolled), list(outcome.exited)
    finish(session, engine, loaded, outcome, applied)
    event_stored(session, engine, loaded, event)  # its outcome counters
    return Ingested(event_id, lead_id, enrolled=enrolled, exited=exited)
