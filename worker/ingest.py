"""Events in: store the event (idempotent on its id), find or merge the lead, run the engine
(scoring, exits, reactions, enrollments) and write every resulting step run — one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import Session

from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.schemas import EventIn
from worker.store.events import find_by_key, store_event
from worker.store.leads import find_or_create
from worker.store.worlds import Loaded, add_timeline, load_world, lock_lead, save_world


@dataclass(frozen=True)
class Ingested:
    event_id: str
    lead_id: str
    duplicate: bool = False
    enrolled: list[str] = field(default_factory=list)
    exited: list[str] = field(default_factory=list)


def ingest(
    session: Session, engine: Engine, event_in: EventIn, now: datetime, *, source: str = "api"
) -> Ingested:
    """The caller's transaction commits; a concurrent duplicate id fails on the unique key."""
    if event_in.id is not None:
        seen = find_by_key(session, event_in.id)
        if seen is not None:
            return Ingested(seen.id, seen.lead_id, duplicate=True)
    lead_row = find_or_create(session, event_in.lead, now, source)
    session.flush()
    locked = lock_lead(session, lead_row.id)
    assert locked is not None
    # decisions carry the time they were made under the lock, not when the request arrived:
    # an exit stamped before a claim that committed first would tell the story backwards
    applied = max(now, datetime.now(UTC))
    loaded = load_world(session, locked, applied)
    event = event_in.to_event(now)
    event_id = store_event(session, lead_row.id, event, now, source, event_in.id)
    outcome = engine.apply_event(loaded.world, event, applied)
    enrolled, exited = list(outcome.enrolled), list(outcome.exited)
    finish(session, engine, loaded, outcome, applied)
    return Ingested(event_id, lead_row.id, enrolled=enrolled, exited=exited)


def finish(
    session: Session, engine: Engine, loaded: Loaded, outcome: Outcome, now: datetime
) -> None:
    """Apply what the outcome emitted, then write the world, its timeline and its wake time."""
    for emitted in engine.settle(loaded.world, outcome, now):
        store_event(session, loaded.lead_row.id, emitted, now, "worker")
    save_world(session, loaded, now)
    add_timeline(session, loaded.lead_row.id, outcome.entries)
    loaded.lead_row.wake_at = engine.next_wakeup(loaded.world, now)
    session.add(loaded.lead_row)
