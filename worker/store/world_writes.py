"""Write a lead's world back: changed rows updated, new enrollments and step runs inserted,
one world at a time or, inside `deferred_writes`, many set-based at the end of a batch."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, inspect, update
from sqlmodel import Session

from worker.engine.state import Enrollment, Entry, Event, Lead, Pause, StepRun, StepStatus
from worker.kit.ids import new_id
from worker.store import counters
from worker.store.deferred import (
    DEFERRED,
    DeferredWrites,
    deferred,
    insert_rows,
    table_of,
)
from worker.store.tables import EnrollmentRow, LeadRow, StepRunRow, TimelineRow
from worker.store.worlds import IN_FLIGHT, Loaded


def save_world(session: Session, loaded: Loaded, now: datetime) -> None:
    """Write the world back: changed rows updated, new enrollments and runs inserted."""
    writes = deferred(session)
    if writes is not None:
        writes.worlds[loaded.lead_row.id] = (loaded, now)
        return
    _update_lead(loaded.lead_row, loaded.world.lead, now)
    session.add(loaded.lead_row)
    for enrollment in loaded.world.enrollments:
        row = loaded.enrollment_rows.get(enrollment.id)
        keys = _enrollment_keys(loaded.lead_row.id, enrollment)
        counters.enrollment_written(
            session, keys, row.status if row else None, _enrollment_values(enrollment)
        )
        if row is None:
            row = EnrollmentRow(**keys, version=enrollment.version)
            loaded.enrollment_rows[enrollment.id] = row
        _update_enrollment(row, enrollment)
        session.add(row)
        for position, run in enumerate(enrollment.steps):
            _save_run(session, loaded, run, enrollment, position, now)
    for position, run in enumerate(loaded.world.actions):
        _save_run(session, loaded, run, None, position, now)
    counters.flush(session)  # the outcomes this write-back counted: one INSERT


def add_timeline(session: Session, lead_id: str, entries: list[Entry]) -> None:
    writes = deferred(session)
    if writes is not None:
        for entry in entries:
            writes.insert(TimelineRow, _timeline_values(lead_id, entry))
        return
    for entry in entries:
        session.add(TimelineRow(**_timeline_values(lead_id, entry)))


def _timeline_values(lead_id: str, entry: Entry) -> dict[str, Any]:
    return {
        "lead_id": lead_id,
        "at": entry.at,
        "sequence_id": entry.sequence,
        "step_id": entry.step,
        "enrollment_id": entry.enrollment,
        "action": entry.action,
        "channel": entry.channel,
        "reason": entry.reason,
        "subject": entry.subject,
    }


@contextmanager
def deferred_writes(session: Session) -> Iterator[DeferredWrites]:
    """Inside: `store_event`, `save_world` and `add_timeline` gather their rows; on a clean
    exit they are written in bulk. On an error nothing is written (the caller rolls back)."""
    if deferred(session) is not None:
        raise RuntimeError("deferred writes do not nest")
    writes = DeferredWrites()
    session.info[DEFERRED] = writes
    try:
        yield writes
    finally:
        del session.info[DEFERRED]
    write_deferred(session, writes)


def write_deferred(session: Session, writes: DeferredWrites) -> None:
    save_worlds(session, writes.worlds.values())
    for model, rows in writes.inserts.items():
        insert_rows(session, table_of(model), rows)
    counters.flush(session)  # the outcomes the whole batch counted: one INSERT


def save_worlds(session: Session, worlds: Iterable[tuple[Loaded, datetime]]) -> None:
    """`save_world` for many leads: one executemany per table and kind (insert, update), only
    enrollments and runs that changed. The lead rows are written whole (with what merges and
    hooks set on them) and then detached from the session, so the ORM does not write them
    again, a row at a time."""
    new_enrollments: list[dict[str, Any]] = []
    changed_enrollments: list[dict[str, Any]] = []
    new_runs: list[dict[str, Any]] = []
    changed_runs: list[dict[str, Any]] = []
    new_leads: list[dict[str, Any]] = []
    changed_leads: list[dict[str, Any]] = []
    lead_rows: list[LeadRow] = []
    lead_columns = [column.name for column in table_of(LeadRow).columns]
    for loaded, now in worlds:
        lead_row = loaded.lead_row
        lead_rows.append(lead_row)
        values = {name: getattr(lead_row, name) for name in lead_columns}
        values.update(_lead_values(loaded.world.lead, now))
        if inspect(lead_row).pending:
            new_leads.append(values)
        else:
            changed_leads.append({"row_id": values.pop("id"), **values})
        lead_id = lead_row.id
        for enrollment in loaded.world.enrollments:
            values = _enrollment_values(enrollment)
            row = loaded.enrollment_rows.get(enrollment.id)
            keys = _enrollment_keys(lead_id, enrollment)
            counters.enrollment_written(session, keys, row.status if row else None, values)
            if row is None:
                new_enrollments.append({**keys, **values})
            elif _changed(row, values):
                changed_enrollments.append({"row_id": row.id, **values})
            for position, run in enumerate(enrollment.steps):
                _gather_run(session, loaded, run, enrollment, position, now, new_runs, changed_runs)
        for position, run in enumerate(loaded.world.actions):
            _gather_run(session, loaded, run, None, position, now, new_runs, changed_runs)
    for lead_row in lead_rows:
        session.expunge(lead_row)
    connection = session.connection()
    for model, new, changed in (
        (LeadRow, new_leads, changed_leads),
        (EnrollmentRow, new_enrollments, changed_enrollments),
        (StepRunRow, new_runs, changed_runs),
    ):
        table = table_of(model)
        insert_rows(session, table, new)
        if changed:
            # one statement shape for every changed row: each writes all engine columns
            statement = (
                update(table)
                .where(table.c.id == bindparam("row_id"))
                .values({name: bindparam(name) for name in changed[0] if name != "row_id"})
            )
            connection.execute(statement, changed)


def _gather_run(
    session: Session,
    loaded: Loaded,
    run: StepRun,
    enrollment: Enrollment | None,
    position: int,
    now: datetime,
    new: list[dict[str, Any]],
    changed: list[dict[str, Any]],
) -> None:
    row = loaded.run_rows.get(run.id) if run.id is not None else None
    if row is None:
        run.id = run.id or new_id()
        keys = _run_keys(loaded.lead_row.id, run.id, run, enrollment)
        values = _run_values(run, None, position)
        counters.run_written(session, keys, None, values, now)
        new.append({**keys, **values})
        return
    values = _run_values(run, row.status, position)
    if _changed(row, values):
        counters.run_written(session, _row_keys(row), row, values, now)
        changed.append({"row_id": row.id, **values})


def _row_keys(row: StepRunRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "sequence_id": row.sequence_id,
        "step_id": row.step_id,
        "enrollment_id": row.enrollment_id,
    }


def _changed(row: Any, values: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in values.items())


# -- state → rows ----------------------------------------------------------------------------


def _update_lead(row: LeadRow, lead: Lead, now: datetime) -> None:
    for name, value in _lead_values(lead, now).items():
        setattr(row, name, value)


def _lead_values(lead: Lead, now: datetime) -> dict[str, Any]:
    """The columns of a lead the engine changes."""
    return {
        "suppressions": dict(lead.suppressions),
        "score": {
            "entries": [
                {"at": e.at.isoformat(), "type": e.event_type, "points": e.points, "id": e.event_id}
                for e in lead.score.entries
            ],
            "fired": sorted(lead.score.fired),
        },
        "segment": lead.score.segment,
        "history": list(lead.history),
        "last_activity_at": lead.last_activity_at,
        "inactive_notified": lead.inactive_notified,
        "last_inbound_whatsapp_at": lead.last_inbound_whatsapp_at,
        "pause": _pause_data(lead.pause),
        "updated_at": now,
    }


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


def _enrollment_keys(lead_id: str, enrollment: Enrollment) -> dict[str, Any]:
    """The columns a new enrollment row is written with once and never changed."""
    return {
        "id": enrollment.id,
        "lead_id": lead_id,
        "sequence_id": enrollment.sequence_id,
        "enrolled_at": enrollment.enrolled_at,
        "anchor_at": enrollment.anchor_at,
    }


def _update_enrollment(row: EnrollmentRow, enrollment: Enrollment) -> None:
    for name, value in _enrollment_values(enrollment).items():
        setattr(row, name, value)


def _enrollment_values(enrollment: Enrollment) -> dict[str, Any]:
    """The columns of an enrollment the engine changes."""
    return {
        "key": enrollment.key,
        "status": enrollment.status,
        "anchored": enrollment.anchored,
        "version": enrollment.version,
        "event": event_data(enrollment.event),
        "events_seen": list(enrollment.events_seen),
        "pause": _pause_data(enrollment.pause),
        "shift_seconds": enrollment.shift.total_seconds(),
        "exit_reason": enrollment.exit_reason,
        "ended_at": enrollment.ended_at,
    }


def _save_run(
    session: Session,
    loaded: Loaded,
    run: StepRun,
    enrollment: Enrollment | None,
    position: int,
    now: datetime,
) -> None:
    if run.id is None:
        run.id = new_id()
    row = loaded.run_rows.get(run.id)
    old = row
    if row is None:
        keys = _run_keys(loaded.lead_row.id, run.id, run, enrollment)
        row = StepRunRow(**keys)
        loaded.run_rows[run.id] = row
    else:
        keys = _row_keys(row)
    values = _run_values(run, old.status if old else None, position)
    counters.run_written(session, keys, old, values, now)
    for name, value in values.items():
        setattr(row, name, value)
    session.add(row)


def _run_keys(
    lead_id: str, run_id: str, run: StepRun, enrollment: Enrollment | None
) -> dict[str, Any]:
    """The columns a new step run row is written with once and never changed; a run outside
    any enrollment (a scoring action) is filed under the sequence id "scoring"."""
    return {
        "id": run_id,
        "lead_id": lead_id,
        "enrollment_id": enrollment.id if enrollment else None,
        "sequence_id": enrollment.sequence_id if enrollment else "scoring",
        "step_id": run.step_id,
        "kind": run.kind,
    }


def _run_values(run: StepRun, stored_status: str | None, position: int) -> dict[str, Any]:
    """The columns of a step run the engine changes; `stored_status` is the row's (None for
    a new row)."""
    status = run.status.value
    # a run a task holds (queued, claimed) keeps that state; its task re-checks it
    if run.status is StepStatus.PENDING and stored_status in IN_FLIGHT:
        status = stored_status
    return {
        "position": position,
        "status": status,
        "due_at": run.due_at,
        "nominal_at": run.nominal_at,
        "anchored": run.anchored,
        "channel": run.channel,
        "variant": run.variant,
        "reason": run.reason,
        "finished_at": run.finished_at,
        "sent_at": run.sent_at,
        "version": run.version,
        "attempts": run.attempts,
        "event": event_data(run.event),
    }
