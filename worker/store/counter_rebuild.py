"""The backfill (`nurture stats backfill`): the outcome counters and their marks rebuilt from the
rows already stored, in one transaction that first takes the counters' tables for itself (on
PostgreSQL a lock that waits for the writes in flight and holds new ones until it commits).

It replaces every counter row with a recount, so running it twice gives the same counts, and a
delta written by a send meanwhile is either part of the recount or written after it. Each
outcome goes in the hour of its own row's time: a step's sending, skipping or failing, an
enrollment's start and end, a message's sending (delivered), the first event of its kind
(opened, clicked, replied, unsubscribed), the first goal event in the window (converted; a
step sent later at its sending). `scheduled` goes in the hour its enrollment started (a step
run keeps no time of its making).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, insert, or_, select, text
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from worker.engine.checks import MESSAGE_CHANNELS
from worker.store import counters
from worker.store.counter_rows import ENROLLMENT, CounterMarkRow, CounterRow
from worker.store.counters import FINISHED, RunKey
from worker.store.tables import EnrollmentRow, EventRow, MessageRow, StepRunRow

CHUNK = 1000
OUTCOME = {
    "email_opened": "opened",
    "email_clicked": "clicked",
    "replied": "replied",
    "unsubscribed": "unsubscribed",
}


@dataclass(frozen=True)
class Goal:
    event: str
    within: timedelta


@dataclass(frozen=True)
class Rebuilt:
    rows: int
    marks: int


def rebuild(session: Session, goals: dict[str, Goal]) -> Rebuilt:
    """Replace the counters and marks with a recount of the stored rows. `goals`: sequence →
    its goal (from the sequence files), for the conversions."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE outcome_counters, outcome_marks IN EXCLUSIVE MODE"))
    session.execute(delete(CounterRow))
    session.execute(delete(CounterMarkRow))
    session.info.pop(counters.TALLY, None)
    marks: set[tuple[str, str]] = set()
    _runs(session)
    _enrollments(session)
    _delivered(session)
    _engagement(session, marks)
    _conversions(session, goals, marks)
    found = counters.tally(session).deltas
    rows = sum(1 for n in found.values() if n)
    counters.flush(session, CHUNK)
    for chunk in _chunks(sorted(marks)):
        session.execute(insert(CounterMarkRow).values([{"outcome": o, "ref": r} for o, r in chunk]))
    return Rebuilt(rows, len(marks))


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _stream(session: Session, statement: Any) -> Iterable[Any]:
    return session.execute(statement.execution_options(yield_per=CHUNK))


def _runs(session: Session) -> None:
    """Scheduled, sent, skipped and failed per step run of an enrollment."""
    rows = _stream(
        session,
        select(
            col(StepRunRow.sequence_id),
            col(StepRunRow.version),
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
            col(StepRunRow.status),
            col(StepRunRow.reason),
            col(StepRunRow.sent_at),
            col(StepRunRow.finished_at),
            col(EnrollmentRow.enrolled_at),
        ).join(EnrollmentRow, col(EnrollmentRow.id) == col(StepRunRow.enrollment_id)),
    )
    for sequence_id, version, step, variant, status, reason, sent_at, finished_at, at in rows:
        key = RunKey.of(sequence_id, version, step, variant)
        counters.add(session, key, at, "scheduled")
        if status in FINISHED:
            when = (sent_at or finished_at) if status == "sent" else finished_at
            counters.add(session, key, when or at, status, "" if status == "sent" else reason)


def _enrollments(session: Session) -> None:
    rows = _stream(
        session,
        select(
            col(EnrollmentRow.sequence_id),
            col(EnrollmentRow.version),
            col(EnrollmentRow.status),
            col(EnrollmentRow.enrolled_at),
            col(EnrollmentRow.ended_at),
        ),
    )
    for sequence_id, version, status, enrolled_at, ended_at in rows:
        key = RunKey.of(sequence_id, version, ENROLLMENT, None)
        counters.add(session, key, enrolled_at, "entered")
        if status in counters.ENDED:
            counters.add(session, key, ended_at or enrolled_at, status)


def _delivered(session: Session) -> None:
    """Sent runs whose message counts as delivered, at the message's sending."""
    rows = _stream(
        session,
        select(
            col(StepRunRow.id),
            col(StepRunRow.sequence_id),
            col(StepRunRow.version),
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
            col(MessageRow.channel),
            col(MessageRow.status),
            col(MessageRow.sent_at),
        )
        .join(MessageRow, col(MessageRow.step_run_id) == col(StepRunRow.id))
        .where(col(StepRunRow.status) == "sent", col(StepRunRow.enrollment_id).is_not(None)),
    )
    done: set[str] = set()
    for run_id, sequence_id, version, step, variant, channel, status, sent_at in rows:
        if run_id not in done and counters.delivered(channel, status):
            done.add(run_id)
            counters.add(session, RunKey.of(sequence_id, version, step, variant), sent_at,
                         "delivered")  # fmt: skip


def _property(name: str) -> ColumnElement[str]:
    found: ColumnElement[str] = col(EventRow.properties)[name].as_string()
    return found


def _engagement(session: Session, marks: set[tuple[str, str]]) -> None:
    """The first open, click, reply, unsubscribe of each message: the run an event names, or
    for a reply or an unsubscribe that names none, the lead's last message sent before it."""
    touched = aliased(StepRunRow)
    channel = _property("channel")
    last_touch = (
        select(col(touched.id))
        .where(
            col(touched.lead_id) == col(EventRow.lead_id),
            col(touched.status) == "sent",
            col(touched.sent_at) <= col(EventRow.occurred_at),
            col(touched.channel).in_(MESSAGE_CHANNELS),
            or_(channel.is_(None), col(touched.channel) == channel),
        )
        .order_by(col(touched.sent_at).desc())
        .limit(1)
        .correlate(EventRow)
        .scalar_subquery()
    )
    named = col(EventRow.type).in_(("email_opened", "email_clicked"))
    found = (
        select(
            col(EventRow.type).label("type"),
            col(EventRow.occurred_at).label("at"),
            func.coalesce(_property("step_run"), last_touch).label("run"),
        )
        .where(col(EventRow.type).in_(list(OUTCOME)))
        .where(or_(~named, _property("step_run").is_not(None)))
        .subquery()
    )
    rows = _stream(
        session,
        select(
            found.c.type,
            func.min(found.c.at),
            col(StepRunRow.id),
            col(StepRunRow.sequence_id),
            col(StepRunRow.version),
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
        )
        .select_from(found)
        .join(StepRunRow, col(StepRunRow.id) == found.c.run)
        .where(col(StepRunRow.enrollment_id).is_not(None))
        .group_by(
            found.c.type,
            col(StepRunRow.id),
            col(StepRunRow.sequence_id),
            col(StepRunRow.version),
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
        ),
    )
    for kind, at, run_id, sequence_id, version, step, variant in rows:
        outcome = OUTCOME[str(kind)]
        marks.add((outcome, str(run_id)))
        counters.add(session, RunKey.of(sequence_id, version, step, variant), at, outcome)


def _conversions(session: Session, goals: dict[str, Goal], marks: set[tuple[str, str]]) -> None:
    """Per sequence with a goal: each enrollment whose first goal event after enrolling came
    within the window, and every step of it sent."""
    for sequence_id, goal in sorted(goals.items()):
        rows = session.execute(
            select(
                col(EnrollmentRow.id),
                col(EnrollmentRow.version),
                col(EnrollmentRow.enrolled_at),
                func.min(col(EventRow.occurred_at)),
            )
            .join(EventRow, col(EventRow.lead_id) == col(EnrollmentRow.lead_id))
            .where(
                col(EnrollmentRow.sequence_id) == sequence_id,
                col(EventRow.type) == goal.event,
                col(EventRow.occurred_at) >= col(EnrollmentRow.enrolled_at),
            )
            .group_by(
                col(EnrollmentRow.id), col(EnrollmentRow.version), col(EnrollmentRow.enrolled_at)
            )
        ).all()
        reached: dict[str, datetime] = {}
        for enrollment_id, version, enrolled_at, first in rows:
            if first <= enrolled_at + goal.within:
                reached[str(enrollment_id)] = first
                marks.add(("converted", str(enrollment_id)))
                key = RunKey.of(sequence_id, version, ENROLLMENT, None)
                counters.add(session, key, first, "converted")
        for chunk in _chunks(sorted(reached)):
            _converted_steps(session, chunk, reached)


def _converted_steps(session: Session, enrollment_ids: list[str], at: dict[str, datetime]) -> None:
    sent = session.execute(
        select(
            col(StepRunRow.enrollment_id),
            col(StepRunRow.sequence_id),
            col(StepRunRow.version),
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
            col(StepRunRow.sent_at),
        ).where(col(StepRunRow.enrollment_id).in_(enrollment_ids), col(StepRunRow.status) == "sent")
    ).all()
    for enrollment_id, sequence_id, version, step, variant, sent_at in sent:
        reached = at[str(enrollment_id)]
        when = max(reached, sent_at) if sent_at else reached
        counters.add(session, RunKey.of(sequence_id, version, step, variant), when, "converted")
