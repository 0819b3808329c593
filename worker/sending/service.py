"""Sending step runs: claim, check, render, hand over, record (SPEC §8).

A send task carries a few step runs (a batch from one dispatcher tick); each phase treats them
together, in one transaction, with their leads locked in id order:

1. Claim: re-read the rows and the leads' worlds, run the send-time checks; a wait puts the
   row back with its new due time, a finish records it; otherwise render every part and move
   the row `queued → claimed` by compare-and-set.
2. Hand over: `claimed → sending` by compare-and-set, committed before the provider is called.
   An exit or pause committed before this point stops the step.
3. Send each message, then record every outcome. A crash between the provider accepting and
   the record leaves the row `sending`: the sweeper marks it `unknown`, never resent.

A step that breaks a phase for its batch (a bug, a row that vanished) is retried alone, so it
cannot hold the others back.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from integrations.ports import (
    CrmTaskRequest,
    PermanentError,
    RateLimited,
    SendResult,
    TemporaryError,
    TextMessage,
)
from worker.engine.checks import Finish, Go, Switches, Wait
from worker.engine.state import Outcome, StepRun, StepStatus
from worker.kit.clock import Clock, utcnow
from worker.kit.ids import new_id
from worker.kit.signing import unsubscribe_url
from worker.rendering.templates import RenderError
from worker.runtime.process import Runtime
from worker.sending.compose import Composed, compose, context
from worker.sending.email import email_message
from worker.sending.tracking import track
from worker.store.db import transaction
from worker.store.steps import leads_of, mark_claimed, mark_sending
from worker.store.switches import read_switches
from worker.store.tables import MessageRow, StepRunRow
from worker.store.worlds import Loaded, load_worlds, lock_leads
from worker.world.unit import finish

log = logging.getLogger("nurture")
MAX_ATTEMPTS = 6
Delivered = SendResult | TemporaryError | PermanentError


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
    return send_steps(runtime, [step_run_id], clock)[step_run_id]


def send_steps(runtime: Runtime, step_run_ids: list[str], clock: Clock = utcnow) -> dict[str, str]:
    """Run several steps to their end (or next wait): what happened to each, by id."""
    ids = list(dict.fromkeys(step_run_ids))
    try:
        results, claimed = claim(runtime, ids, clock)
    except Exception:
        if len(ids) == 1:
            raise
        log.exception("claiming %d steps together failed: claiming each alone", len(ids))
        return {step_run_id: _alone(runtime, step_run_id, clock) for step_run_id in ids}
    if not claimed:
        return results
    fault(runtime, "after_claim")
    # a rate-limited channel waits for its slot before each hand-over, so no message sits
    # `sending` while it waits (a worker killed there would leave it `unknown`, never sent);
    # the rest are handed over together
    free: list[Claimed] = []
    limited: list[Claimed] = []
    for each in claimed:
        (limited if runtime.rate_limited(each.composed.channel) else free).append(each)
    delivered: list[tuple[Claimed, Delivered]] = []
    _send(runtime, free, results, delivered)
    for each in limited:
        try:
            runtime.throttle(each.composed.channel)
        except RateLimited as exc:  # booked beyond the longest wait: back to pending
            delivered.append((each, exc))
            continue
        _send(runtime, [each], results, delivered)
    if delivered:
        fault(runtime, "after_send")
        results.update(record(runtime, delivered, clock))
    return results


def _send(
    runtime: Runtime,
    claimed: list[Claimed],
    results: dict[str, str],
    delivered: list[tuple[Claimed, Delivered]],
) -> None:
    """Hand the claimed steps over in one transaction, then give each to its provider."""
    if not claimed:
        return
    with transaction(runtime.database) as session:
        # under the leads' locks, like every change to a lead: an exit that already read the
        # row as `claimed` must finish before this, or see `sending` and leave it alone
        lock_leads(session, (each.lead_id for each in claimed))
        handed = mark_sending(session, [each.step_run_id for each in claimed])
    for each in claimed:
        if each.step_run_id not in handed:
            results[each.step_run_id] = "stopped before hand-over"
            continue
        try:
            delivered.append((each, deliver(runtime, each)))
        except (TemporaryError, PermanentError) as exc:
            delivered.append((each, exc))
        except Exception as exc:  # the provider may or may not have it: never resend
            log.exception("step run %s: sending failed unexpectedly; it will turn `unknown`",
                          each.step_run_id)  # fmt: skip
            results[each.step_run_id] = f"error ({exc})"


def _alone(runtime: Runtime, step_run_id: str, clock: Clock) -> str:
    try:
        return send_step(runtime, step_run_id, clock)
    except Exception as exc:
        log.exception("step run %s could not be sent", step_run_id)
        return f"error ({exc})"


def fault(runtime: Runtime, point: str) -> None:
    """Tests kill a worker here: between the claim and the hand-over, or between the
    provider's acceptance and the record."""
    if runtime.config.fault_point == point:
        time.sleep(runtime.config.fault_seconds)


def claim(
    runtime: Runtime, step_run_ids: list[str], clock: Clock
) -> tuple[dict[str, str], list[Claimed]]:
    """Check, render and claim every step that may go; the others are put back or finished.
    Returns what happened to those that do not go, and the claimed ones in the given order."""
    results: dict[str, str] = {}
    ready: list[Claimed] = []
    with transaction(runtime.database) as session:
        leads = leads_of(session, step_run_ids)
        lead_rows = lock_leads(session, leads.values())
        now = clock()
        worlds = load_worlds(session, lead_rows.values(), now)
        switches = read_switches(session)
        for step_run_id in step_run_ids:
            loaded = worlds.get(leads.get(step_run_id, ""))
            checked = _check(runtime, session, loaded, step_run_id, switches, now)
            if isinstance(checked, str):
                results[step_run_id] = checked
            else:
                ready.append(checked)
        lease = timedelta(seconds=runtime.config.lease_seconds)
        moved = mark_claimed(session, [each.step_run_id for each in ready], now, lease)
    claimed = []
    for each in ready:
        if each.step_run_id in moved:
            claimed.append(each)
        else:
            results[each.step_run_id] = "claimed elsewhere"
    return results, claimed


def _check(
    runtime: Runtime,
    session: Session,
    loaded: Loaded | None,
    step_run_id: str,
    switches: Switches,
    now: datetime,
) -> Claimed | str:
    row = loaded.run_rows.get(step_run_id) if loaded else None
    if loaded is None or row is None:
        # not in its lead's world: finished, or gone with an erased lead
        found = session.get(StepRunRow, step_run_id)
        return "no such step" if found is None else f"not claimable ({found.status})"
    if row.status not in ("queued", "pending"):
        return f"not claimable ({row.status})"
    if row.due_at is None or row.due_at > now:
        _release(row)
        return "not due"
    run = _find(loaded, step_run_id)
    engine = runtime.engine
    decision = engine.check(loaded.world, run, now, switches)
    if isinstance(decision, Wait):
        engine.wait(run, decision)
        row.hold = decision.why if decision.until is None else None
        _release(row)
        finish(session, engine, loaded, Outcome(), now)
        return f"waits ({decision.why})"
    if isinstance(decision, Finish):
        outcome = engine.record_finished(loaded.world, run, decision.status, decision.reason, now)
        finish(session, engine, loaded, outcome, now)
        return f"{decision.status.value} ({decision.reason})"
    try:
        composed = _compose(runtime, loaded, run, decision, now)
    except RenderError as exc:
        outcome = engine.record_finished(loaded.world, run, StepStatus.FAILED, "render_error", now)
        finish(session, engine, loaded, outcome, now)
        return f"failed (render_error: {exc})"
    return Claimed(step_run_id, loaded.lead_row.id, composed, decision.address)


def deliver(runtime: Runtime, claimed: Claimed) -> SendResult:
    composed = claimed.composed
    reference = claimed.step_run_id
    if composed.channel in ("email", "notify"):
        message = email_message(
            runtime.config, composed, reference=reference, lead_id=claimed.lead_id
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
        run = _find(loaded, claimed.step_run_id)
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
        wait = backoff(row.attempts)
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
