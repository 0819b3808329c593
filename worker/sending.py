"""Sending one step run: claim, check, render, hand over, record (SPEC §8).

1. Claim: under the lead's lock, re-read the row and the enrollment, run the send-time checks;
   a wait puts the row back with its new due time, a finish records it; otherwise render every
   part and move the row `queued → claimed` by compare-and-set.
2. Hand over: `claimed → sending` by compare-and-set, committed before the provider is called.
   An exit or pause committed before this point stops the step.
3. Send, then record the outcome under the lead's lock. A crash between the provider accepting
   and the record leaves the row `sending`: the sweeper marks it `unknown`, never resent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session

from integrations.ports import (
    CrmTaskRequest,
    EmailMessage,
    PermanentError,
    SendResult,
    TemporaryError,
    TextMessage,
)
from worker.compose import Composed, compose, context
from worker.engine.checks import Finish, Go, Wait
from worker.engine.state import Outcome, StepRun, StepStatus
from worker.ingest import finish
from worker.rendering import RenderError
from worker.runtime import Runtime
from worker.store.db import transaction
from worker.store.steps import mark_claimed, mark_sending
from worker.store.switches import read_switches
from worker.store.tables import MessageRow, StepRunRow
from worker.store.worlds import Loaded, load_world, lock_lead, new_id
from worker.tokens import unsubscribe_url
from worker.tracking import track

MAX_ATTEMPTS = 6
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claimed:
    step_run_id: str
    lead_id: str
    composed: Composed
    to: str | None


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min … capped at an hour, with jitter so a storm does not come back whole."""
    base = min(3600.0, 30.0 * 2 ** max(0, attempts - 1))
    return timedelta(seconds=base * random.uniform(0.8, 1.2))


def send_step(runtime: Runtime, step_run_id: str, clock: Clock = utcnow) -> str:
    """Run one step to its end (or its next wait). Returns what happened, for logs and tests."""
    claimed = claim(runtime, step_run_id, clock)
    if isinstance(claimed, str):
        return claimed
    fault(runtime, "after_claim")
    with transaction(runtime.database) as session:
        # under the lead's lock, like every change to the lead: an exit that already read the
        # row as `claimed` must finish before this, or see `sending` and leave it alone
        lock_lead(session, claimed.lead_id)
        if not mark_sending(session, step_run_id):
            return "stopped before hand-over"
    try:
        result = deliver(runtime, claimed)
    except TemporaryError as exc:
        return record_temporary(runtime, claimed, exc, clock)
    except PermanentError as exc:
        return record_failure(runtime, claimed, exc.code or "permanent", exc.suppress, clock)
    fault(runtime, "after_send")
    return record_sent(runtime, claimed, result, clock)


def fault(runtime: Runtime, point: str) -> None:
    """Tests kill a worker here: between the claim and the hand-over, or between the
    provider's acceptance and the record."""
    if runtime.config.fault_point == point:
        time.sleep(runtime.config.fault_seconds)


def claim(runtime: Runtime, step_run_id: str, clock: Clock) -> Claimed | str:
    with transaction(runtime.database) as session:
        row = session.get(StepRunRow, step_run_id)
        if row is None:
            return "no such step"
        lead_row = lock_lead(session, row.lead_id)
        session.refresh(row)
        now = clock()
        if row.status not in ("queued", "pending") or lead_row is None:
            return f"not claimable ({row.status})"
        if row.due_at is None or row.due_at > now:
            _release(row)
            return "not due"
        loaded = load_world(session, lead_row, now)
        run = _find(loaded, step_run_id)
        engine = runtime.engine
        decision = engine.check(loaded.world, run, now, read_switches(session))
        if isinstance(decision, Wait):
            engine.wait(run, decision)
            row.hold = decision.why if decision.until is None else None
            _release(row)
            finish(session, engine, loaded, Outcome(), now)
            return f"waits ({decision.why})"
        if isinstance(decision, Finish):
            outcome = engine.record_finished(
                loaded.world, run, decision.status, decision.reason, now
            )
            finish(session, engine, loaded, outcome, now)
            return f"{decision.status.value} ({decision.reason})"
        try:
            composed = _compose(runtime, loaded, run, decision, now)
        except RenderError as exc:
            outcome = engine.record_finished(
                loaded.world, run, StepStatus.FAILED, "render_error", now
            )
            finish(session, engine, loaded, outcome, now)
            return f"failed (render_error: {exc})"
        lease = timedelta(seconds=runtime.config.lease_seconds)
        if not mark_claimed(session, step_run_id, now, lease):
            return "claimed elsewhere"
        return Claimed(step_run_id, lead_row.id, composed, decision.address)


def deliver(runtime: Runtime, claimed: Claimed) -> SendResult:
    composed = claimed.composed
    reference = claimed.step_run_id
    if composed.channel in ("email", "notify"):
        email = composed.email
        assert email is not None
        headers = {
            "Message-ID": f"<{reference}@nurture>",
            "X-Nurture-Step-Run": reference,
        }
        if not email.transactional and composed.channel == "email":
            url = unsubscribe_url(runtime.config, claimed.lead_id, "email")
            headers["List-Unsubscribe"] = f"<{url}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message = EmailMessage(
            to=composed.to or "",
            subject=email.subject,
            html=email.html,
            text=email.text,
            from_address=email.from_address or runtime.config.email_from,
            reply_to=email.reply_to,
            preheader=email.preheader,
            headers=headers,
        )
        return runtime.email.send(message)
    if composed.channel in ("sms", "whatsapp"):
        return runtime.text.send(
            TextMessage(
                to=composed.to or "",
                channel=composed.channel,
                body=composed.body,
                content_sid=composed.content_sid,
                variables=composed.variables,
                reference=reference,
            )
        )
    return runtime.crm.create_task(
        CrmTaskRequest(
            email=composed.to,
            subject=composed.subject or "",
            body=composed.body,
            priority=composed.priority or "medium",
            task_type=composed.task_type or "todo",
            due_after_seconds=composed.due_after_seconds or 0,
            reference=reference,
        )
    )


def record_sent(runtime: Runtime, claimed: Claimed, result: SendResult, clock: Clock) -> str:
    with transaction(runtime.database) as session:
        loaded, run, now = _reload(runtime, session, claimed, clock)
        outcome = runtime.engine.record_sent(
            loaded.world, run, now, subject=claimed.composed.subject
        )
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
                sent_at=now,
                updated_at=now,
            )
        )
    return "sent"


def record_temporary(runtime: Runtime, claimed: Claimed, exc: TemporaryError, clock: Clock) -> str:
    with transaction(runtime.database) as session:
        loaded, run, now = _reload(runtime, session, claimed, clock)
        row = loaded.run_rows[claimed.step_run_id]
        if row.attempts >= MAX_ATTEMPTS:
            outcome = runtime.engine.record_finished(
                loaded.world, run, StepStatus.FAILED, exc.code or "temporary", now
            )
            finish(session, runtime.engine, loaded, outcome, now)
            return f"failed after {row.attempts} attempts ({exc})"
        run.status = StepStatus.PENDING
        run.due_at = now + backoff(row.attempts)
        row.status = "pending"
        row.reason = f"retry: {exc}"[:200]
        row.lease_until = None
        finish(session, runtime.engine, loaded, Outcome(), now)
        return f"retry at {run.due_at.isoformat()} ({exc})"


def record_failure(
    runtime: Runtime, claimed: Claimed, code: str, suppress: str | None, clock: Clock
) -> str:
    with transaction(runtime.database) as session:
        loaded, run, now = _reload(runtime, session, claimed, clock)
        outcome = runtime.engine.record_finished(
            loaded.world, run, StepStatus.FAILED, code, now, suppress=suppress
        )
        finish(session, runtime.engine, loaded, outcome, now)
        loaded.run_rows[claimed.step_run_id].lease_until = None
    return f"failed ({code})"


def _reload(
    runtime: Runtime, session: Session, claimed: Claimed, clock: Clock
) -> tuple[Loaded, StepRun, datetime]:
    lead_row = lock_lead(session, claimed.lead_id)
    assert lead_row is not None
    now = clock()
    loaded = load_world(session, lead_row, now)
    return loaded, _find(loaded, claimed.step_run_id), now


def _find(loaded: Loaded, step_run_id: str) -> StepRun:
    for run in loaded.world.actions:
        if run.id == step_run_id:
            return run
    for enrollment in loaded.world.enrollments:
        for run in enrollment.steps:
            if run.id == step_run_id:
                return run
    raise LookupError(f"step run {step_run_id} is not in its lead's world")


def _release(row: StepRunRow) -> None:
    row.status = "pending"
    row.lease_until = None


def _compose(runtime: Runtime, loaded: Loaded, run: StepRun, go: Go, now: datetime) -> Composed:
    engine = runtime.engine
    enrollment = next((e for e in loaded.world.enrollments if run in e.steps), None)
    names = engine.names(loaded.world, enrollment, run.event, now)
    definition = runtime.catalog.sequence(enrollment.sequence_id) if enrollment else None
    values = context(
        names,
        sequence=enrollment.sequence_id if enrollment else "scoring",
        sequence_name=definition.model.name if definition else None,
        step=run.step_id,
        unsubscribe_url=unsubscribe_url(runtime.config, loaded.lead_row.id, go.channel),
        now=now,
    )
    templates = runtime.catalog.templates
    assert templates is not None
    composed = track(
        runtime.config,
        definition.model.tracking if definition else None,
        compose(templates, go, values),
        step_run_id=run.id or "",
        lead_id=loaded.lead_row.id,
    )
    if composed.channel == "crm_task" and composed.to is None:
        composed = Composed(**{**composed.__dict__, "to": loaded.world.lead.email})
    return composed
