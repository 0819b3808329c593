"""Load a lead's world (lead, enrollments, step runs) from its rows, one lead or many at once.

The engine works on dataclasses; this module and `world_writes` are the only places that map
them to rows, so the engine never sees the database and the database never sees a half-decided
state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from worker.engine.checks import MESSAGE_CHANNELS
from worker.engine.scoring import ScoreEntry, ScoreState
from worker.engine.state import (
    Enrollment,
    Event,
    Lead,
    LeadWorld,
    Pause,
    StepRun,
    StepStatus,
)
from worker.store.tables import EnrollmentRow, LeadRow, MessageRow, StepRunRow

CAP_HORIZON = timedelta(days=31)
IN_FLIGHT = {"queued": StepStatus.PENDING, "claimed": StepStatus.PENDING}
"""Dispatch states the engine sees as pending: the send task re-checks them on claim."""


@dataclass
class Loaded:
    """A world and the rows it came from, so saving updates exactly those."""

    world: LeadWorld
    lead_row: LeadRow
    enrollment_rows: dict[str, EnrollmentRow] = field(default_factory=dict)
    run_rows: dict[str, StepRunRow] = field(default_factory=dict)


def load_world(session: Session, lead_row: LeadRow, now: datetime) -> Loaded:
    return load_worlds(session, [lead_row], now)[lead_row.id]


def load_worlds(
    session: Session, lead_rows: Iterable[LeadRow], now: datetime, *, sends: bool = True
) -> dict[str, Loaded]:
    """The worlds of several leads in three queries, whatever their number (two without
    `sends`, for work that checks no cap: the write-back of accepted sends).

    A lead's `sends` (what frequency caps count) are its recorded messages plus every step
    claimed or handed over with no message recorded yet, at its claim time: a send on its way
    counts before it lands, so two workers (or two steps of one batch) cannot both pass a cap.
    Enrollments come in the order they were made (by enrollment time, then sequence id), the
    order `nurture simulate` keeps them in, so steps due at the same instant go in the same
    order in both."""
    found: dict[str, Loaded] = {}
    for lead_row in lead_rows:
        found[lead_row.id] = new_world(lead_row)
    if not found:
        return found
    ids = list(found)
    recorded = _sends(session, found, now) if sends else set()
    enrollments = session.execute(
        select(EnrollmentRow)
        .where(col(EnrollmentRow.lead_id).in_(ids))
        .order_by(
            col(EnrollmentRow.enrolled_at), col(EnrollmentRow.sequence_id), col(EnrollmentRow.id)
        )
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
        on_its_way = _on_its_way(run_row)
        if sends and on_its_way is not None and run_row.id not in recorded:
            loaded.world.lead.sends.append(on_its_way)
        if run_row.enrollment_id is None:
            loaded.world.actions.append(run)
        else:
            by_enrollment[run_row.enrollment_id].steps.append(run)
    return found


def _sends(session: Session, found: dict[str, Loaded], now: datetime) -> set[str]:
    """Fill each lead's `sends` with its messages inside the longest cap window; returns the
    step runs those messages belong to."""
    messages = session.execute(
        select(
            col(MessageRow.lead_id),
            col(MessageRow.sent_at),
            col(MessageRow.channel),
            col(MessageRow.step_run_id),
        ).where(
            col(MessageRow.lead_id).in_(list(found)),
            col(MessageRow.sent_at) >= now - CAP_HORIZON,
        )
    ).all()
    recorded = set()
    for lead_id, at, channel, step_run_id in messages:
        found[lead_id].world.lead.sends.append((at, channel))
        recorded.add(step_run_id)
    return recorded


def _on_its_way(row: StepRunRow) -> tuple[datetime, str] | None:
    """A message claimed or handed over, as a send at its claim time (one the provider has
    accepted has its message row, which counts instead)."""
    if row.status not in ("claimed", "sending"):
        return None
    channel = row.channel
    if row.claimed_at is None or channel is None or channel not in MESSAGE_CHANNELS:
        return None
    return row.claimed_at, channel


def new_world(lead_row: LeadRow) -> Loaded:
    """A lead's world before its enrollments and runs are added (`load_worlds`), or the whole
    world of a lead created in this transaction: nothing to load."""
    return Loaded(LeadWorld(_lead(lead_row)), lead_row)


def refresh_lead(loaded: Loaded) -> None:
    """Copy into the world what a merge may have changed on the lead row since it was loaded:
    identities, names, attributes, consent (the engine changes none of them). Only those: a
    batch does this per event, and rebuilding the whole lead would re-parse its score."""
    row, lead = loaded.lead_row, loaded.world.lead
    lead.email, lead.phone, lead.external_id = row.email, row.phone, row.external_id
    lead.first_name, lead.last_name, lead.timezone = row.first_name, row.last_name, row.timezone
    lead.attributes, lead.consent = dict(row.attributes), _consent(row.consent)


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
        consent=_consent(row.consent),
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


def _consent(data: dict[str, Any]) -> dict[str, bool]:
    return {channel: bool(given.get("granted")) for channel, given in data.items()}


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
