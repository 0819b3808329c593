"""Counting queries for the funnel (`GET /v1/sequences/{id}/stats`, `nurture stats`). Every
count is one GROUP BY over a table, never a loop over rows.

Engagement attaches to a step run: opens and clicks carry `properties.step_run`; a reply or an
unsubscribe that names no step run goes to the lead's last message sent before it on the same
channel (last touch), whichever sequence that message belonged to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, exists, func, or_, select
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from worker.store.tables import EnrollmentRow, EventRow, MessageRow, StepRunRow

StepKey = tuple[str, int | None]
"""(step id, variant index): one line of the funnel."""

SCHEDULED = ("pending", "queued", "claimed", "sending")
TEXT_CHANNELS = ("sms", "whatsapp")
MESSAGE_CHANNELS = ("email", "sms", "whatsapp")
DELIVERED_TEXT = ("delivered", "read")
NOT_DELIVERED_EMAIL = ("bounced", "failed", "undelivered", "complained")
ENGAGEMENT = ("email_opened", "email_clicked")
ATTRIBUTED = ("replied", "unsubscribed")


@dataclass(frozen=True)
class RunCount:
    step: str
    variant: int | None
    status: str
    reason: str | None
    channel: str | None
    count: int


def _key(step: Any, variant: Any) -> StepKey:
    return str(step), int(variant) if variant is not None else None


def step_runs_by_status(session: Session, sequence_id: str) -> list[RunCount]:
    """Step runs of a sequence's enrollments by step, variant, status and reason."""
    runs = col(StepRunRow.step_id), col(StepRunRow.variant)
    rows = session.execute(
        select(
            *runs,
            col(StepRunRow.status),
            col(StepRunRow.reason),
            func.max(col(StepRunRow.channel)),
            func.count(),
        )
        .where(col(StepRunRow.sequence_id) == sequence_id)
        .where(col(StepRunRow.enrollment_id).is_not(None))
        .group_by(*runs, col(StepRunRow.status), col(StepRunRow.reason))
    ).all()
    return [RunCount(str(s), v, str(st), r, c, int(n)) for s, v, st, r, c, n in rows]


def delivered(session: Session, sequence_id: str) -> dict[StepKey, int]:
    """Messages the provider reports delivered: an SMS or WhatsApp needs the delivery
    receipt; an email accepted by the relay counts until it bounces."""
    text_ok = and_(
        col(MessageRow.channel).in_(TEXT_CHANNELS), col(MessageRow.status).in_(DELIVERED_TEXT)
    )
    email_ok = and_(
        col(MessageRow.channel).not_in(TEXT_CHANNELS),
        col(MessageRow.status).not_in(NOT_DELIVERED_EMAIL),
    )
    runs = col(StepRunRow.step_id), col(StepRunRow.variant)
    rows = session.execute(
        select(*runs, func.count(distinct(col(MessageRow.step_run_id))))
        .select_from(MessageRow)
        .join(StepRunRow, col(StepRunRow.id) == col(MessageRow.step_run_id))
        .where(col(StepRunRow.sequence_id) == sequence_id, or_(text_ok, email_ok))
        .group_by(*runs)
    ).all()
    return {_key(s, v): int(n) for s, v, n in rows}


def _property(name: str) -> ColumnElement[str]:
    found: ColumnElement[str] = col(EventRow.properties)[name].as_string()
    return found


def engagement(session: Session, sequence_id: str) -> dict[str, dict[StepKey, int]]:
    """Messages opened and clicked (each message once), by event type."""
    runs = col(StepRunRow.step_id), col(StepRunRow.variant)
    rows = session.execute(
        select(*runs, col(EventRow.type), func.count(distinct(col(StepRunRow.id))))
        .select_from(EventRow)
        .join(StepRunRow, col(StepRunRow.id) == _property("step_run"))
        .where(col(EventRow.type).in_(ENGAGEMENT), col(StepRunRow.sequence_id) == sequence_id)
        .group_by(*runs, col(EventRow.type))
    ).all()
    return _by_type(rows)


def attributed(session: Session, sequence_id: str) -> dict[str, dict[StepKey, int]]:
    """Messages that drew a reply or an unsubscribe (each message once), by event type."""
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
    in_sequence = select(col(StepRunRow.lead_id)).where(col(StepRunRow.sequence_id) == sequence_id)
    found = (
        select(
            col(EventRow.type).label("type"),
            func.coalesce(_property("step_run"), last_touch).label("run"),
        )
        .where(col(EventRow.type).in_(ATTRIBUTED), col(EventRow.lead_id).in_(in_sequence))
        .subquery()
    )
    runs = col(StepRunRow.step_id), col(StepRunRow.variant)
    rows = session.execute(
        select(*runs, found.c.type, func.count(distinct(col(StepRunRow.id))))
        .select_from(found)
        .join(StepRunRow, col(StepRunRow.id) == found.c.run)
        .where(col(StepRunRow.sequence_id) == sequence_id)
        .group_by(*runs, found.c.type)
    ).all()
    return _by_type(rows)


def _by_type(rows: Iterable[Any]) -> dict[str, dict[StepKey, int]]:
    found: dict[str, dict[StepKey, int]] = {}
    for step, variant, kind, count in rows:
        found.setdefault(str(kind), {})[_key(step, variant)] = int(count)
    return found


def _goal_met(session: Session, goal: str, within_seconds: float) -> ColumnElement[bool]:
    """The enrollment's lead had the goal event from enrollment until `within` after it."""
    occurred, enrolled = col(EventRow.occurred_at), col(EnrollmentRow.enrolled_at)
    if session.get_bind().dialect.name == "sqlite":
        # SQLite keeps times as text: compare them as Julian day numbers
        in_time = func.julianday(occurred) <= func.julianday(enrolled) + within_seconds / 86400
    else:
        in_time = occurred <= enrolled + func.make_interval(0, 0, 0, 0, 0, 0, within_seconds)
    return exists().where(
        col(EventRow.lead_id) == col(EnrollmentRow.lead_id),
        col(EventRow.type) == goal,
        occurred >= enrolled,
        in_time,
    )


def converted_steps(
    session: Session, sequence_id: str, goal: str, within_seconds: float
) -> dict[StepKey, int]:
    """Sent step runs whose enrollment reached the goal in its window."""
    runs = col(StepRunRow.step_id), col(StepRunRow.variant)
    rows = session.execute(
        select(*runs, func.count(distinct(col(StepRunRow.id))))
        .select_from(StepRunRow)
        .join(EnrollmentRow, col(EnrollmentRow.id) == col(StepRunRow.enrollment_id))
        .where(
            col(StepRunRow.sequence_id) == sequence_id,
            col(StepRunRow.status) == "sent",
            _goal_met(session, goal, within_seconds),
        )
        .group_by(*runs)
    ).all()
    return {_key(s, v): int(n) for s, v, n in rows}


def converted_enrollments(
    session: Session, sequence_id: str, goal: str, within_seconds: float
) -> int:
    found = session.execute(
        select(func.count())
        .select_from(EnrollmentRow)
        .where(
            col(EnrollmentRow.sequence_id) == sequence_id,
            _goal_met(session, goal, within_seconds),
        )
    ).scalar_one()
    return int(found)


def enrollments_by_status(session: Session, sequence_id: str) -> dict[str, int]:
    rows = session.execute(
        select(col(EnrollmentRow.status), func.count())
        .where(col(EnrollmentRow.sequence_id) == sequence_id)
        .group_by(col(EnrollmentRow.status))
    ).all()
    return {str(status): int(count) for status, count in rows}


def active_enrollments(session: Session) -> dict[str, int]:
    """Active enrollments per sequence."""
    rows = session.execute(
        select(col(EnrollmentRow.sequence_id), func.count())
        .where(col(EnrollmentRow.status) == "active")
        .group_by(col(EnrollmentRow.sequence_id))
    ).all()
    return {str(sequence): int(count) for sequence, count in rows}


def known_sequence(session: Session, sequence_id: str) -> bool:
    """The database holds enrollments of this sequence (its file may be gone)."""
    found = session.execute(
        select(col(EnrollmentRow.id)).where(col(EnrollmentRow.sequence_id) == sequence_id).limit(1)
    ).first()
    return found is not None
