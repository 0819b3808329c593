"""Handing claimed step runs over to their providers, one message at a time.

Each message is marked `claimed → sending` by compare-and-set (committed) just before its
provider is called, and what the provider said is recorded in the same transaction that
hands the next one over (`desk.py`; the last one's in a transaction of its own). So at any
instant at most one message of a process is `sending` with its outcome not on disk: a worker
killed anywhere leaves at most that one `unknown`; the rest are recorded, or still `claimed`
(the sweeper gives them back). A rate-limited channel waits for its slot while the step is
only `claimed`, with the previous answer recorded before the wait; a channel whose provider is
held (it refused our credentials, `holds.py`) is not called: its steps go back to pending.
"""

from __future__ import annotations

import logging

from integrations.ports import (
    CrmTaskRequest,
    PermanentError,
    RateLimited,
    SendResult,
    TemporaryError,
    TextMessage,
)
from worker.kit import metrics
from worker.kit.clock import Clock
from worker.runtime.calls import provider_call
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed
from worker.sending.desk import Desk, Said
from worker.sending.email import email_message
from worker.sending.faults import fault, stops_at
from worker.sending.holds import held_channels, provider_of
from worker.sending.record import Answer
from worker.store.steps import Accepted

log = logging.getLogger("nurture")


def hand_over(
    runtime: Runtime, claimed: list[Claimed], results: dict[str, str], clock: Clock
) -> list[tuple[Claimed, Accepted]]:
    """Hand every claimed step over, one at a time, recording each answer before the next
    hand-over. Returns the accepted ones with what their message rows say, for the
    write-back; the others' results (failed, retry, stopped, in doubt) go to `results`."""
    held = held_channels(runtime, {each.composed.channel for each in claimed}, clock())
    with Desk(runtime, results, clock) as desk:
        said: Said | None = None
        for number, each in enumerate(claimed, 1):
            if each.composed.channel in held:  # its provider refused our credentials: it waits
                desk.commit(said)
                said = (each, held[each.composed.channel])
                continue
            limited = runtime.rate_limited(each.composed.channel)
            if limited or stops_at(runtime, "mid_batch", number - 1):
                desk.commit(said)  # nothing waits unrecorded: not for a rate slot, not a fault
                said = None
                fault(runtime, "mid_batch", number - 1)
            if limited:
                provider = provider_of(runtime.config, each.composed.channel)
                try:
                    waited = runtime.throttle(each.composed.channel)
                except RateLimited as exc:  # booked beyond the longest wait: back to pending
                    metrics.count_throttled(provider)
                    said = (each, exc)
                    continue
                if waited > 0:
                    metrics.count_throttled(provider)
            handed = desk.commit(said, each)
            said = None
            if not handed:
                results[each.step_run_id] = "stopped before hand-over"
                continue
            answer = _call(runtime, each, results)
            if answer is None:
                continue
            if isinstance(answer, SendResult):
                fault(runtime, "after_send", number)
            said = (each, answer)
        desk.commit(said)
        return desk.accepted


def _call(runtime: Runtime, claimed: Claimed, results: dict[str, str]) -> Answer | None:
    """What the provider said; None when it may or may not have the message (left `sending`:
    the sweeper marks it `unknown`, never resent)."""
    try:
        return deliver(runtime, claimed)
    except (TemporaryError, PermanentError) as exc:
        return exc
    except Exception as exc:
        log.exception("step run %s: sending failed unexpectedly; it will turn `unknown`",
                      claimed.step_run_id)  # fmt: skip
        results[claimed.step_run_id] = f"error ({exc})"
        return None


def deliver(runtime: Runtime, claimed: Claimed) -> SendResult:
    """Give one step to its provider: email, text (SMS, WhatsApp) or a CRM task."""
    with provider_call(provider_of(runtime.config, claimed.composed.channel)):
        return _deliver(runtime, claimed)


def _deliver(runtime: Runtime, claimed: Claimed) -> SendResult:
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
