"""Outcomes an event brings, counted as the event is stored (worker/store/counters.py keeps
the tally): a message opened or clicked (the run the event names), replied to or unsubscribed
from (the run it names, else the lead's last message sent before it on that channel), each
once per message; an enrollment converted (the sequence's `goal:` event within `goal.within`
of enrolling), once, with every step of it sent so far (later sends count as they happen).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session, col

from worker.engine.checks import MESSAGE_CHANNELS
from worker.engine.core import Engine
from worker.engine.state import Enrollment, Event
from worker.store import counters
from worker.store.counter_rows import ENROLLMENT
from worker.store.counters import RunKey
from worker.store.deferred import deferred
from worker.store.tables import StepRunRow
from worker.store.worlds import Loaded

NAMED = ("email_opened", "email_clicked")
"""Events that name their message (`properties.step_run`)."""
ATTRIBUTED = ("replied", "unsubscribed")
"""Events that name their message or go to the last one sent (last touch)."""
OUTCOME = {
    "email_opened": "opened",
    "email_clicked": "clicked",
    "replied": "replied",
    "unsubscribed": "unsubscribed",
}


def event_stored(session: Session, engine: Engine, loaded: Loaded, event: Event) -> None:
    """Count what the event brings; written with the write-back (or at once, outside a batch)."""
    if event.type in NAMED or event.type in ATTRIBUTED:
        _message_outcome(session, loaded, event)
    _conversions(session, engine, loaded, event)
    if deferred(session) is None:
        counters.flush(session)


def _message_outcome(session: Session, loaded: Loaded, event: Event) -> None:
    named = event.properties.get("step_run")
    run_id = str(named) if named is not None else None
    if run_id is None and event.type in ATTRIBUTED:
        run_id = _last_touch(session, loaded.lead_row.id, event)
    if run_id is None:
        return
    row = loaded.run_rows.get(run_id) or session.get(StepRunRow, run_id)
    if row is None or row.enrollment_id is None:
        return
    outcome = OUTCOME[event.type]
    if counters.mark_once(session, outcome, run_id):
        key = RunKey.of(row.sequence_id, row.version, row.step_id, row.variant)
        counters.add(session, key, event.occurred_at, outcome)


def _last_touch(session: Session, lead_id: str, event: Event) -> str | None:
    """The lead's last message sent at or before the event, on the event's channel if it
    names one."""
    channel = event.properties.get("channel")
    conditions = [
        col(StepRunRow.lead_id) == lead_id,
        col(StepRunRow.status) == "sent",
        col(StepRunRow.sent_at) <= event.occurred_at,
        col(StepRunRow.channel).in_(MESSAGE_CHANNELS),
    ]
    if channel is not None:
        conditions.append(col(StepRunRow.channel) == str(channel))
    found: str | None = session.execute(
        select(col(StepRunRow.id))
        .where(*conditions)
        .order_by(col(StepRunRow.sent_at).desc())
        .limit(1)
    ).scalar()
    return found


def _conversions(session: Session, engine: Engine, loaded: Loaded, event: Event) -> None:
    for enrollment in loaded.world.enrollments:
        definition = engine.catalog.sequence(enrollment.sequence_id)
        goal = definition.model.goal if definition else None
        if goal is None or goal.event != event.type:
            continue
        within = timedelta(seconds=goal.within.approximate().total_seconds())
        if not enrollment.enrolled_at <= event.occurred_at <= enrollment.enrolled_at + within:
            continue
        if counters.mark_once(session, "converted", enrollment.id):
            _converted(session, enrollment, event.occurred_at)


def _converted(session: Session, enrollment: Enrollment, at: datetime) -> None:
    """The enrollment and each of its steps sent so far count as converted, at the later of
    the conversion and the send."""
    key = RunKey.of(enrollment.sequence_id, enrollment.version, ENROLLMENT, None)
    counters.add(session, key, at, "converted")
    sent = session.execute(
        select(StepRunRow).where(
            col(StepRunRow.enrollment_id) == enrollment.id, col(StepRunRow.status) == "sent"
        )
    ).scalars()
    for row in sent:
        key = RunKey.of(row.sequence_id, row.version, row.step_id, row.variant)
        counters.add(session, key, max(at, row.sent_at or at), "converted")
