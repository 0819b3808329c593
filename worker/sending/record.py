"""Recording what the providers said about handed-over step runs: sent, a retry with backoff,
or failed; in one transaction for the batch, else one step at a time."""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlmodel import Session

from integrations.ports import RateLimited, SendResult, TemporaryError
from worker.engine.state import Outcome, StepRun, StepStatus
from worker.kit.backoff import backoff
from worker.kit.clock import Clock
from worker.kit.ids import new_id
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed, find_run
from worker.sending.deliver import Delivered
from worker.store.db import transaction
from worker.store.locks import lock_leads
from worker.store.tables import MessageRow
from worker.store.worlds import Loaded, load_worlds
from worker.world.unit import finish

log = logging.getLogger("nurture")
MAX_ATTEMPTS = 6
FIRST_RETRY = 30.0
"""Seconds before the first retry of a temporary failure: 30 s, 1 min, 2 min …"""
LONGEST_RETRY = 3600.0


def record(
    runtime: Runtime, delivered: list[tuple[Claimed, Delivered]], clock: Clock
) -> dict[str, str]:
    """Record what the providers said, in one transaction; alone, a step at a time, if the
    batch cannot be recorded together."""
    try:
        with transaction(runtime.database) as session:
            return _record_all(runtime, session, delivered, clock)
    except Exception:
        if len(delivered) == 1:
            raise
        log.exception("recording %d sends together failed: recording each alone", len(delivered))
    results: dict[str, str] = {}
    for item in delivered:
        try:
            results.update(record(runtime, [item], clock))
        except Exception as exc:  # left `sending`: the sweeper marks it unknown
            log.exception("step run %s was handed over and could not be recorded",
                          item[0].step_run_id)  # fmt: skip
            results[item[0].step_run_id] = f"error ({exc})"
    return results


def _record_all(
    runtime: Runtime, session: Session, delivered: list[tuple[Claimed, Delivered]], clock: Clock
) -> dict[str, str]:
    lead_rows = lock_leads(session, (claimed.lead_id for claimed, _ in delivered))
    now = clock()
    worlds = load_worlds(session, lead_rows.values(), now)
    results = {}
    for claimed, outcome in delivered:
        loaded = worlds[claimed.lead_id]
        run = find_run(loaded, claimed.step_run_id)
        if isinstance(outcome, SendResult):
            found = record_sent(runtime, session, loaded, run, claimed, outcome, now)
        elif isinstance(outcome, TemporaryError):
            found = record_temporary(runtime, session, loaded, run, outcome, now)
        else:
            code = outcome.code or "permanent"
            found = record_failure(runtime, session, loaded, run, code, outcome.suppress, now)
        results[claimed.step_run_id] = found
    return results


def record_sent(
    runtime: Runtime,
    session: Session,
    loaded: Loaded,
    run: StepRun,
    claimed: Claimed,
    result: SendResult,
    now: datetime,
) -> str:
    outcome = runtime.engine.record_sent(loaded.world, run, now, subject=claimed.composed.subject)
    finish(session, runtime.engine, loaded, outcome, now)
    row = loaded.run_rows[claimed.step_run_id]
    row.provider_message_id = result.provider_message_id
    row.lease_until = None
    session.add(
        MessageRow(
            id=new_id(),
            step_run_id=claimed.step_run_id,
            lead_id=claimed.lead_id,
            channel=claimed.composed.channel,
            to=claimed.composed.to,
            subject=claimed.composed.subject,
            body=claimed.composed.body,
            provider_message_id=result.provider_message_id,
            segments=result.segments,
            sent_at=now,
            updated_at=now,
        )
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
