"""Handing claimed step runs over to their providers: `claimed → sending` by compare-and-set,
committed before the provider is called; a rate-limited channel waits for its slot first."""

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
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed
from worker.sending.email import email_message
from worker.store.db import transaction
from worker.store.locks import lock_leads
from worker.store.steps import mark_sending

log = logging.getLogger("nurture")
Delivered = SendResult | TemporaryError | PermanentError


def deliver_all(
    runtime: Runtime, claimed: list[Claimed], results: dict[str, str]
) -> list[tuple[Claimed, Delivered]]:
    """Hand every claimed step over and send it: what each provider said, to be recorded.
    Steps that never reach a provider, or whose fate is unknown, are noted in `results`."""
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
    return delivered


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


def deliver(runtime: Runtime, claimed: Claimed) -> SendResult:
    """Give one step to its provider: email, text (SMS, WhatsApp) or a CRM task."""
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
