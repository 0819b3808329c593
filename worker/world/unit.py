"""The one unit of work on a lead: lock the lead, load its world, let the engine act on it, and
write everything back — the world, its timeline, its wake time, the events it emitted and the
CRM outbox — in one transaction. Every service that changes a lead goes through here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlmodel import Session

from worker.crm.changes import record_changes
from worker.engine.core import Engine
from worker.engine.state import Outcome
from worker.kit import metrics
from worker.kit.clock import Clock, utcnow
from worker.kit.errors import NotFound
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.events import store_event
from worker.store.locks import lock_lead
from worker.store.world_writes import add_timeline, save_world
from worker.store.worlds import Loaded, load_world
from worker.world.counting import event_stored

Act = Callable[[Engine, Loaded, datetime], Outcome]
"""One engine action on a loaded world at a time: what `with_lead` runs under the lock."""


def finish(
    session: Session, engine: Engine, loaded: Loaded, outcome: Outcome, now: datetime
) -> None:
    """Apply what the outcome emitted, then write the world, its timeline and its wake time."""
    for emitted in engine.settle(loaded.world, outcome, now):
        store_event(session, loaded.lead_row.id, emitted, now, "worker")
        event_stored(session, engine, loaded, emitted)  # its outcome counters
    save_world(session, loaded, now)
    add_timeline(session, loaded.lead_row.id, outcome.entries)
    loaded.lead_row.wake_at = engine.next_wakeup(loaded.world, now)
    session.add(loaded.lead_row)
    record_changes(session, engine, loaded, outcome, now)  # the CRM outbox, same transaction
    count_skips(outcome)


def count_skips(outcome: Outcome) -> None:
    """`nurture_steps_skipped_total`: the steps the engine skipped (a failure's timeline entry
    says `skip` too, with a reason that is not a skip's)."""
    for entry in outcome.entries:
        if entry.action == "skip" and entry.reason in metrics.SKIP_REASONS:
            metrics.count_skip(entry.reason)


def act_locked(session: Session, engine: Engine, lead_id: str, act: Act, now: datetime) -> Outcome:
    """Lock the lead, run `act` on its world and write it back, in the caller's transaction.
    Raises NotFound when there is no such lead."""
    lead_row = lock_lead(session, lead_id)
    if lead_row is None:
        raise NotFound(f"no lead {lead_id}")
    loaded = load_world(session, lead_row, now)
    outcome = act(engine, loaded, now)
    finish(session, engine, loaded, outcome, now)
    return outcome


def with_lead(runtime: Runtime, lead_id: str, act: Act, clock: Clock = utcnow) -> Outcome:
    """`act_locked` in a transaction of its own, at the clock's time."""
    with transaction(runtime.database) as session:
        return act_locked(session, runtime.engine, lead_id, act, clock())
