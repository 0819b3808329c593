"""Recording what a provider said about one handed-over step run, durably, before the next one
is handed over: an acceptance cheaply (its message row, one INSERT), a retry with backoff or a
failure through the lead's world at once (rare, and they release or finish steps). The
write-back of acceptances into the worlds is `complete.py`."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlmodel import Session

from integrations.ports import (
    CredentialsRefused,
    PermanentError,
    RateLimited,
    SendResult,
    TemporaryError,
)
from worker.engine.state import Outcome, StepRun, StepStatus
from worker.kit.backoff import backoff
from worker.kit.ids import new_id
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed, find_run
from worker.sending.holds import note_refused
from worker.store.locks import lock_leads
from worker.store.messages import pack_copy
from worker.store.steps import add_message
from worker.store.worlds import Loaded, load_worlds
from worker.world.unit import finish

log = logging.getLogger("nurture")
MAX_ATTEMPTS = 6
FIRST_RETRY = 30.0
"""Seconds before the first retry of a temporary failure: 30 s, 1 min, 2 min …"""
LONGEST_RETRY = 3600.0

Answer = SendResult | TemporaryError | PermanentError
"""What a provider said about one message (or our own rate limit, before the hand-over)."""


def record_answer(
    runtime: Runtime, connection: Connection, claimed: Claimed, answer: Answer, now: datetime
) -> str:
    """Record `answer` in the connection's transaction, which holds the lead's lock."""
    if isinstance(answer, SendResult):
        return accept(connection, claimed, answer, now)
    # a failure goes through the lead's world: the ORM, in the same transaction
    with Session(bind=connection, expire_on_commit=False) as session:
        if isinstance(answer, CredentialsRefused) and answer.code != "held":
            note_refused(session, answer, now)  # every worker holds that provider now
        lead_row = lock_leads(session, [claimed.lead_id])[claimed.lead_id]
        loaded = load_worlds(session, [lead_row], now)[lead_row.id]
        run = find_run(loaded, claimed.step_run_id)
        if isinstance(answer, TemporaryError):
            found = record_temporary(runtime, session, loaded, run, answer, now)
        else:
            code = answer.code or "permanent"
            found = record_failure(runtime, session, loaded, run, code, answer.suppress, now)
        session.flush()
    return found


def accept(connection: Connection, claimed: Claimed, result: SendResult, now: datetime) -> str:
    """The provider has the message: its message row (when, under which id, what, and for an
    email the copy as sent) is the durable record, and caps count it from here on. The step
    turns `sent` in the write-back."""
    composed = claimed.composed
    email = composed.email
    add_message(
        connection,
        {
            "id": new_id(),
            "step_run_id": claimed.step_run_id,
            "lead_id": claimed.lead_id,
            "channel": composed.channel,
            "to": composed.to,
            "subject": composed.subject,
            "body": composed.body,
            "provider_message_id": result.provider_message_id,
            "status": "accepted",
            "segments": result.segments,
            "sent_copy": pack_copy(email.subject, email.text, email.html) if email else None,
            "sent_at": now,
            "updated_at": now,
        },
    )
    return "sent"


def record_temporary(
    runtime: Runtime,
    session: Session,
    loaded: Loaded,
    run: StepRun,
    exc: TemporaryError,
    now: datetime,
) -> str:
    row = loaded.run_rows[run.id or ""]
    told = exc.retry_after if isinstance(exc, RateLimited) else None
    if told is not None:
        # the provider (or our own rate limit) said when: wait that long, and the attempt
        # does not count toward failing the step
        row.attempts = run.attempts = max(0, row.attempts - 1)
        wait = timedelta(seconds=told * random.uniform(1.0, 1.2))
    elif row.attempts >= MAX_ATTEMPTS:
        outcome = runtime.engine.record_finished(
            loaded.world, run, StepStatus.FAILED, exc.code or "temporary", now
        )
        finish(session, runtime.engine, loaded, outcome, now)
        return f"failed after {row.attempts} attempts ({exc})"
    else:
        wait = backoff(row.attempts, first=FIRST_RETRY, longest=LONGEST_RETRY)
    run.status = StepStatus.PENDING
    run.due_at = now + wait
    run.reason = f"retry: {exc}"[:200]  # shown on the lead while it waits
    row.status = "pending"
    row.lease_until = None
    finish(session, runtime.engine, loaded, Outcome(), now)
    return f"retry at {run.due_at.isoformat()} ({exc})"


def record_failure(
    runtime: Runtime,
    session: Session,
    loaded: Loaded,
    run: StepRun,
    code: str,
    suppress: str | None,
    now: datetime,
) -> str:
    outcome = runtime.engine.record_finished(
        loaded.world, run, StepStatus.FAILED, code, now, suppress=suppress
    )
    finish(session, runtime.engine, loaded, outcome, now)
    loaded.run_rows[run.id or ""].lease_until = None
    return f"failed ({code})"
