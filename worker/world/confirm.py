"""A text left `unknown` confirmed as sent once the provider shows it had it: by a late status
callback that names the step run (worker/ingest/texts.py) or by asking the provider
(worker/sending/confirm.py). Never a resend (SPEC §8): only the record is completed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from worker.engine.core import Engine
from worker.engine.state import StepRun
from worker.kit.ids import new_id
from worker.store import counters
from worker.store.locks import lock_lead
from worker.store.messages import find_by_provider_id
from worker.store.tables import MessageRow, StepRunRow
from worker.store.worlds import Loaded, load_world
from worker.world.unit import finish


@dataclass(frozen=True)
class Confirmation:
    """What the provider shows of a message sent for a step run."""

    step_run_id: str
    provider_message_id: str
    status: str
    """The message's status as the provider has it (queued, sent, delivered …)."""
    sent_at: datetime
    to: str | None = None
    body: str | None = None
    segments: int | None = None


def confirm_sent(
    session: Session, engine: Engine, found: Confirmation, now: datetime
) -> MessageRow | None:
    """Under the lead's lock: a step run still `unknown` becomes `sent` with the provider's id,
    and its message is recorded with the provider's status; the timeline, `sms_sent` and the
    CRM follow as for any send, and an `after:` step waiting on it is released. None, changing
    nothing, for a step that is not `unknown` or a message already recorded."""
    row = session.get(StepRunRow, found.step_run_id)
    if row is None or row.status != "unknown":
        return None
    lead_row = lock_lead(session, row.lead_id)
    if lead_row is None:
        return None
    loaded = load_world(session, lead_row, now)
    row = loaded.run_rows.get(found.step_run_id) or session.get(StepRunRow, found.step_run_id)
    if row is None or row.status != "unknown":  # re-read under the lock
        return None
    if find_by_provider_id(session, found.provider_message_id) is not None:
        return None
    run = _run(loaded, found.step_run_id)
    if run is not None:
        outcome = engine.record_sent(loaded.world, run, found.sent_at)
        finish(session, engine, loaded, outcome, now)
    else:  # its enrollment has ended since: only the record is completed
        values = {"status": "sent", "sent_at": found.sent_at, "version": row.version,
                  "variant": row.variant}  # fmt: skip
        counters.run_written(session, _keys(row), row, values, now)
        row.status, row.reason, row.sent_at = "sent", None, found.sent_at
    counters.flush(session)  # before the message: it is counted once, just below
    row.provider_message_id = found.provider_message_id
    row.lease_until = None
    session.add(row)
    message = MessageRow(
        id=new_id(),
        step_run_id=found.step_run_id,
        lead_id=row.lead_id,
        channel=row.channel or "sms",
        to=found.to,
        body=found.body,
        provider_message_id=found.provider_message_id,
        status=found.status or "accepted",
        segments=found.segments,
        sent_at=found.sent_at,
        updated_at=now,
    )
    session.add(message)
    session.flush()
    counters.message_recorded(session, message)
    counters.flush(session)
    return message


def _keys(row: StepRunRow) -> dict[str, str | None]:
    return {"id": row.id, "sequence_id": row.sequence_id, "step_id": row.step_id,
            "enrollment_id": row.enrollment_id}  # fmt: skip


def _run(loaded: Loaded, step_run_id: str) -> StepRun | None:
    for run in loaded.world.actions:
        if run.id == step_run_id:
            return run
    for enrollment in loaded.world.enrollments:
        for run in enrollment.steps:
            if run.id == step_run_id:
                return run
    return None
