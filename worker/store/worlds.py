"""Load a lead's world (lead, enrollments, step runs) under a lock, and write it back.

The engine works on dataclasses; this module is the only place that maps them to rows, so the
engine never sees the database and the database never sees a half-decided state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from worker.engine.scoring import ScoreEntry, ScoreState
from worker.engine.state import (
    Enrollment,
    Entry,
    Event,
    Lead,
    LeadWorld,
    Pause,
    StepRun,
    StepStatus,
)
from worker.store.tables import (
    EnrollmentRow,
    LeadRow,
    MessageRow,
    StepRunRow,
    TimelineRow,
)

CAP_HORIZON = timedelta(days=31)
IN_FLIGHT = {"queued": StepStatus.PENDING, "claimed": StepStatus.PENDING}
"""Dispatch states the engine sees as pending: the send task re-checks them on claim."""


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Loaded:
    """A world and the rows it came from, so saving updates exactly those."""

    world: LeadWorld
    lead_row: LeadRow
    enrollment_rows: dict[str, EnrollmentRow] = field(default_factory=dict)
    run_rows: dict[str, StepRunRow] = field(default_factory=dict)


def lock_lead(session: Session, lead_id: str) -> LeadRow | None:
    """The lead row, locked for this transaction: every change to a lead is serialized."""
    statement = select(LeadRow).where(col(LeadRow.id) == lead_id).with_for_update()
    return session.execute(statement).scalar_one_or_none()


def lock_leads(session: Session, lead_ids: Iterable[str]) -> dict[str, LeadRow]:
    """Several leads locked at once, in id order: two batches over the same leads queue up
    behind each other instead of deadlocking."""
    statement = (
        select(LeadRow)
        .where(col(LeadRow.id).in_(sorted(set(lead_ids))))
        .order_by(col(LeadRow.id))
        .with_for_update()
    )
    return {row.id: row for row in session.execute(statement).scalars()}


def load_world(session: Session, lead_row: LeadRow, now: datetime) -> Loaded:
    return load_worlds(session, [lead_row], now)[lead_row.id]


def load_worlds(session: Session, lead_rows: Iterable[LeadRow], now: datetime) -> dict[str, Loaded]:
    """The worlds of several leads in three queries, whatever their number."""
    found: dict[str, Loaded] = {}
    for lead_row in lead_rows:
        found[lead_row.id] = Loaded(LeadWorld(_lead(lead_row)), lead_row)
    if not found:
        return found
    ids = list(found)
    sends = session.execute(
        select(col(MessageRow.lead_id), col(MessageRow.sent_at), col(MessageRow.channel)).where(
            col(MessageRow.lead_id).in_(ids),
            col(MessageRow.sent_at) >= now - CAP_HORIZON,
        )
    ).all()
    for lead_id, at, channel in sends:
        found[lead_id].world.lead.sends.append((at, channel))
    enrollments = session.execute(
        select(EnrollmentRow).where(col(EnrollmentRow.lead_id).in_(ids))
    ).scalars()
    active_ids = []
    by_enrollment: dict[str, Enrollment] = {}
    for row in enrollments:
        enrollment = _enrollment(row)
        loaded = found[row.lead_id]
        loaded.world.enrollments.append(enrollment)
        loaded.enrollment_rows[row.id] = row
        by_enrollment[row.id] = enrollment
        if row.status == "active":
            active_ids.append(row.id)
    runs = session.execute(
        select(StepRunRow)
        .where(
            col(StepRunRow.lead_id).in_(ids),
            (col(StepRunRow.enrollment_id).in_(active_ids))
            | (col(StepRunRow.enrollment_id).is_(None))
            # an ended enrollment's decided reaction still on its way
            | (col(StepRunRow.status).in_(["pending", "queued", "claimed", "sending"])),
        )
        .order_by(col(StepRunRow.lead_id), col(StepRunRow.position))
    ).scalars()
    for run_row in runs:
        run = _run(run_row)
        loaded = found[run_row.lead_id]
        loaded.run_rows[run_row.id] = run_row
        if run_row.enrollment_id is None:
            loaded.world.actions.append(run)
        else:
            by_enrollment[run_row.enrollment_id].steps.append(run)
    return found


def save_world(session: Session, loaded: Loaded, now: datetime) -> None:
    """Write the world back: changed rows updated, new enrollments and runs inserted."""
    _update_lead(loaded.lead_row, loaded.world.lead, now)
    session.add(loaded.lead_row)
    for enrollment in loaded.world.enrollments:
        row = loaded.enrollment_rows.get(enrollment.id)
        if row is None:
            row = EnrollmentRow(
                id=enrollment.id,
                lead_id=loaded.lead_row.id,
                sequence_id=enrollment.sequence_id,
                enrolled_at=enrollment.enrolled_at,
                anchor_at=enrollment.anchor_at,
                version=enrollment.version,
            )
            loaded.enrollment_rows[enrollment.id] = row
        _update_enrollment(row, enrollment)
        session.add(row)
        for position, run in enumerate(enrollment.steps):
            _save_run(session, loaded, run, enrollment, position)
    for position, run in enumerate(loaded.world.actions):
        _save_run(session, loaded, run, None, position)


def add_timeline(session: Session, lead_id: str, entries: list[Entry]) -> None:
    for entry in entries:
        session.add(
            TimelineRow(
                lead_id=lead_id,
                at=entry.at,
                sequence_id=entry.sequence,
                step_id=entry.step,
                enrollment_id=entry.enrollment,
                action=entry.action,
                channel=entry.channel,
                reason=entry.reason,
                subject=entry.subject,
            )
        )


# -- rows → state ----------------------------------------------------------------------------


def _lead(row: LeadRow) -> Lead:
    score = row.score or {}
    return Lead(
        id=row.id,
        email=row.email,
        phone=row.phone,
        external_id=row.external_id,
        first_name=row.first_name,
        last_name=row.last_name,
        timezone=row.timezone,
        attributes=dict(row.attributes),
        consent={k: bool(v.get("granted")) for k, v in row.consent.items()},
        suppressions=dict(row.suppressions),
        score=ScoreState(
            entries=[
                ScoreEntry(datetime.fromisoformat(e["at"]), e["type"], e["points"], e.get("id"))
                for e in score.get("entries", [])
            ],
            segment=row.segment,
            fired=set(score.get("fired", [])),
        ),
        history=list(row.history),
        last_activity_at=row.last_activity_at,
        inactive_notified=row.inactive_notified,
        last_inbound_whatsapp_at=row.last_inbound_whatsapp_at,
        pause=_pause(row.pause),
    )


def _pause(data: dict[str, Any] | None) -> Pause | None:
    if not data:
        return None
    return Pause(
        at=datetime.fromisoformat(data["at"]),
        until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
        reason=data.get("reason"),
        by=data.get("by"),
        scope=data.get("scope", "enrollment"),
        shifted=timedelta(seconds=data.get("shifted", 0)),
    )


def _event(data: dict[str, Any] | None) -> Event | None:
    if not data:
        return None
    return Event(
        data["type"],
        datetime.fromisoformat(data["occurred_at"]),
        dict(data.get("properties") or {}),
        data.get("id"),
    )


def _enrollment(row: EnrollmentRow) -> Enrollment:
    return Enrollment(
        id=row.id,
        sequence_id=row.sequence_id,
        enrolled_at=row.enrolled_at,
        anchor_at=row.anchor_at,
        version=row.version,
        key=row.key,
        status=row.status,  # type: ignore[arg-type]
        anchored=row.anchored,
        event=_event(row.event),
        events_seen=list(row.events_seen),
        pause=_pause(row.pause),
        shift=timedelta(seconds=row.shift_seconds),
        exit_reason=row.exit_reason,
        ended_at=row.ended_at,
    )


def _run(row: StepRunRow) -> StepRun:
    return StepRun(
        step_id=row.step_id,
        kind=row.kind,  # type: ignore[arg-type]
        status=IN_FLIGHT.get(row.status) or StepStatus(row.status),
        due_at=row.due_at,
        nominal_at=row.nominal_at,
        anchored=row.anchored,
        channel=row.channel,
        variant=row.variant,
        reason=row.reason,
        finished_at=row.finished_at,
        sent_at=row.sent_at,
        version=row.version,
        attempts=row.attempts,
        event=_event(row.event),
        id=row.id,
    )


# -- state → rows ----------------------------------------------------------------------------


def _update_lead(row: LeadRow, lead: Lead, now: datetime) -> None:
    row.suppressions = dict(lead.suppressions)
    row.score = {
        "entries": [
            {"at": e.at.isoformat(), "type": e.event_type, "points": e.points, "id": e.event_id}
            for e in lead.score.entries
        ],
        "fired": sorted(lead.score.fired),
    }
    row.segment = lead.score.segment
    row.history = list(lead.history)
    row.last_activity_at = lead.last_activity_at
    row.inactive_notified = lead.inactive_notified
    row.last_inbound_whatsapp_at = lead.last_inbound_whatsapp_at
    row.pause = _pause_data(lead.pause)
    row.updated_at = now


def _pause_data(pause: Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {
        "at": pause.at.isoformat(),
        "until": pause.until.isoformat() if pause.until else None,
        "reason": pause.reason,
        "by": pause.by,
        "scope": pause.scope,
        "shifted": pause.shifted.total_seconds(),
    }


def event_data(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {
        "type": event.type,
        "occurred_at": event.occurred_at.isoformat(),
        "properties": event.properties,
        "id": event.id,
    }


def _update_enrollment(row: EnrollmentRow, enrollment: Enrollment) -> None:
    row.key = enrollment.key
    row.status = enrollment.status
    row.anchored = enrollment.anchored
    row.version = enrollment.version
    row.event = event_data(enrollment.event)
    row.events_seen = list(enrollment.events_seen)
    row.pause = _pause_data(enrollment.pause)
    row.shift_seconds = enrollment.shift.total_seconds()
    row.exit_reason = enrollment.exit_reason
    row.ended_at = enrollment.ended_at


def _save_run(
    session: Session,
    loaded: Loaded,
    run: StepRun,
    enrollment: Enrollment | None,
    position: int,
) -> None:
    if run.id is None:
        run.id = new_id()
    row = loaded.run_rows.get(run.id)
    if row is None:
        row = StepRunRow(
            id=run.id,
            lead_id=loaded.lead_row.id,
            enrollment_id=enrollment.id if enrollment else None,
            sequence_id=enrollment.sequence_id if enrollment else "scoring",
            step_id=run.step_id,
            kind=run.kind,
        )
        loaded.run_rows[run.id] = row
    row.position = position
    if run.status is StepStatus.PENDING:
        # a run a task holds (queued, claimed) keeps that state; its task re-checks it
        if row.status not in IN_FLIGHT:
            row.status = StepStatus.PENDING.value
    else:
        row.status = run.status.value
    row.due_at = run.due_at
    row.nominal_at = run.nominal_at
    row.anchored = run.anchored
    row.channel = run.channel
    row.variant = run.variant
    row.reason = run.reason
    row.finished_at = run.finished_at
    row.sent_at = run.sent_at
    row.version = run.version
    row.attempts = run.attempts
    row.event = event_data(run.event)
    session.add(row)
