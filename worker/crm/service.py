"""What the CRM hears, and when (issue 6, SPEC §8).

Every change worth telling the CRM — enrolled, step sent, message status, exited, completed,
paused / resumed, score and segment changed, suppressed — becomes a row of the CRM outbox in
the transaction that made the change (`record_changes`, called from `worker.ingest.service.finish`).
`push_pending` sends them later, batched, in order per contact: a temporary failure (429, 5xx,
no connection) holds the contact's changes for a retry with backoff, in the database; a 4xx is
recorded and not retried. A CRM outage of any length loses nothing and reorders nothing.

Each change carries the contact's properties after it (`contact`), so a CRM that only wants
the latest state (HubSpot's upsert) takes the last change of each contact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine as Database
from sqlmodel import Session

from integrations.ports import Crm, PermanentError, PushResult, RateLimited, TemporaryError
from worker.crm import repository as store
from worker.engine import scoring
from worker.engine.core import Engine
from worker.engine.state import Entry, LeadWorld, Outcome
from worker.kit.backoff import backoff
from worker.store.db import transaction
from worker.store.tables import LeadRow, MessageRow, StepRunRow

if TYPE_CHECKING:
    from integrations.hubspot import HubSpotCrm
    from worker.store.worlds import Loaded


@dataclass(frozen=True)
class ContactProperty:
    name: str
    label: str
    type: str
    field_type: str
    description: str


PROPERTY_GROUP = "nurture"
PROPERTIES = (
    ContactProperty("nurture_sequences", "Nurture sequences", "string", "text",
                    "The sequences the contact is enrolled in now, comma-separated."),
    ContactProperty("nurture_status", "Nurture status", "string", "text",
                    "active, paused, completed or exited (the latest enrollment); empty if none."),
    ContactProperty("nurture_step", "Nurture step", "string", "text",
                    "The last step that went out, as sequence/step (a message or a CRM task)."),
    ContactProperty("nurture_last_message", "Nurture last message", "string", "text",
                    "The last message sent, as sequence/step."),
    ContactProperty("nurture_last_message_channel", "Nurture last message channel", "string",
                    "text", "email, sms or whatsapp."),
    ContactProperty("nurture_last_message_status", "Nurture last message status", "string",
                    "text", "accepted, then what the provider reports: delivered, failed …"),
    ContactProperty("nurture_last_message_at", "Nurture last message at", "datetime", "date",
                    "When the last message was accepted by the provider."),
    ContactProperty("nurture_score", "Nurture score", "number", "number",
                    "The lead score, rounded to a whole number."),
    ContactProperty("nurture_segment", "Nurture segment", "string", "text",
                    "The scoring segment (hot, warm …); empty below every threshold."),
    ContactProperty("nurture_unsubscribed", "Nurture unsubscribed", "bool", "booleancheckbox",
                    "The person asked to stop on some channel (unsubscribe, STOP, complaint)."),
    ContactProperty("nurture_suppressions", "Nurture suppressions", "string", "text",
                    "channel:reason for every suppressed channel, e.g. email:bounced."),
    ContactProperty("nurture_exit_reason", "Nurture exit reason", "string", "text",
                    "Why the last enrollment that ended early was exited."),
)  # fmt: skip
ENTRY_KINDS = {
    "enroll": "enrolled",
    "send": "step_sent",
    "crm_task": "task_created",
    "exit": "exited",
    "complete": "completed",
    "pause": "paused",
    "resume": "resumed",
}
NOT_ASKED = frozenset({"bounced", "invalid_number", "erased"})
"""Suppression reasons that are not the person asking to stop."""
CARRIED = (
    "nurture_step",
    "nurture_last_message",
    "nurture_last_message_channel",
    "nurture_last_message_status",
    "nurture_last_message_at",
    "nurture_exit_reason",
)
"""Properties no world state holds: each state carries them from the previous one."""

BATCH_CONTACTS = 100
"""Contacts per push: HubSpot's batch upsert takes up to 100 inputs."""
PER_CONTACT = 500
LEASE = timedelta(minutes=2)
FIRST_RETRY = 5.0
LONGEST_RETRY = 300.0


# -- recording (inside the transaction of the change) ------------------------------------------


def record_changes(
    session: Session, engine: Engine, loaded: Loaded, outcome: Outcome, now: datetime
) -> None:
    """Write what the CRM should hear of `outcome` (and of the lead's new state) to the outbox."""
    row = loaded.lead_row
    if row.erased:
        return
    previous = dict(row.crm_state or {})
    state = contact_state(engine, loaded.world, previous, outcome.entries, now)
    changes = [*entry_changes(outcome.entries), *state_changes(previous, state, now)]
    if not changes:
        return
    row.crm_state = state
    session.add(row)
    lead = identity(row)
    for kind, at, data in changes:
        payload = {"at": at.isoformat(), "lead": lead, "data": data, "contact": state}
        store.add_change(session, row.id, kind, payload, now)


def record_message_status(
    session: Session, lead_row: LeadRow | None, message: MessageRow, status: str, now: datetime
) -> None:
    """A provider's delivery status for a sent message (the caller holds the lead's lock)."""
    if lead_row is None or lead_row.erased:
        return
    run = session.get(StepRunRow, message.step_run_id)
    step = f"{run.sequence_id}/{run.step_id}" if run is not None else None
    state = dict(lead_row.crm_state or {})
    if step is not None and state.get("nurture_last_message") == step:
        state["nurture_last_message_status"] = status
        lead_row.crm_state = state
        session.add(lead_row)
    data = {
        "sequence": run.sequence_id if run else None,
        "step": run.step_id if run else None,
        "channel": message.channel,
        "status": status,
        "provider_message_id": message.provider_message_id,
    }
    payload = {"at": now.isoformat(), "lead": identity(lead_row), "data": data, "contact": state}
    store.add_change(session, lead_row.id, "message_status", payload, now)


def identity(row: LeadRow) -> dict[str, Any]:
    return {"id": row.id, "email": row.email, "phone": row.phone, "external_id": row.external_id}


def contact_state(
    engine: Engine,
    world: LeadWorld,
    previous: dict[str, str],
    entries: list[Entry],
    now: datetime,
) -> dict[str, str]:
    """The contact's CRM properties now (every value a string, as HubSpot takes them)."""
    lead = world.lead
    state = {name: previous.get(name, "") for name in CARRIED}
    for entry in entries:
        step = f"{entry.sequence}/{entry.step}"
        if entry.action == "send":
            state["nurture_step"] = state["nurture_last_message"] = step
            state["nurture_last_message_channel"] = entry.channel or ""
            state["nurture_last_message_status"] = "accepted"
            state["nurture_last_message_at"] = str(int(entry.at.timestamp() * 1000))
        elif entry.action == "crm_task":
            state["nurture_step"] = step
        elif entry.action == "exit":
            state["nurture_exit_reason"] = entry.reason or ""
    score = scoring.score_at(lead.score, engine.rules, now)
    state.update(
        nurture_sequences=", ".join(sorted({e.sequence_id for e in world.active()})),
        nurture_status=_status(world, now),
        nurture_score=str(math.floor(score + 0.5)),
        nurture_segment=lead.score.segment or "",
        nurture_unsubscribed="true" if set(lead.suppressions.values()) - NOT_ASKED else "false",
        nurture_suppressions="; ".join(f"{c}:{r}" for c, r in sorted(lead.suppressions.items())),
    )
    return state


def _status(world: LeadWorld, now: datetime) -> str:
    if world.lead.pause is not None and world.lead.pause.active(now):
        return "paused"
    active = world.active()
    if active:
        held = all(e.pause is not None and e.pause.active(now) for e in active)
        return "paused" if held else "active"
    ended = [e for e in world.enrollments if e.ended_at is not None]
    if not ended:
        return ""
    return max(ended, key=lambda e: e.ended_at or now).status


def entry_changes(entries: Iterable[Entry]) -> list[tuple[str, datetime, dict[str, Any]]]:
    changes = []
    for entry in entries:
        kind = ENTRY_KINDS.get(entry.action)
        if kind is None:
            continue
        data: dict[str, Any] = {"sequence": entry.sequence, "enrollment": entry.enrollment}
        if entry.step is not None:
            data["step"] = entry.step
        if entry.channel is not None:
            data["channel"] = entry.channel
        if entry.subject is not None:
            data["subject"] = entry.subject
        if entry.reason is not None:
            data["reason"] = entry.reason
        changes.append((kind, entry.at, data))
    return changes


def state_changes(
    previous: dict[str, str], state: dict[str, str], now: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    changes: list[tuple[str, datetime, dict[str, Any]]] = []
    before_score = previous.get("nurture_score", "0")
    if before_score != state["nurture_score"]:
        changes.append(("score_changed", now, {"from": before_score, "to": state["nurture_score"]}))
    before_segment = previous.get("nurture_segment", "")
    if before_segment != state["nurture_segment"]:
        changes.append(
            ("segment_changed", now, {"from": before_segment or None,
                                      "to": state["nurture_segment"] or None})
        )  # fmt: skip
    before, after = _suppressions(previous), _suppressions(state)
    for channel, reason in sorted(after.items()):
        if before.get(channel) != reason:
            changes.append(("suppressed", now, {"channel": channel, "reason": reason}))
    for channel in sorted(set(before) - set(after)):
        changes.append(("unsuppressed", now, {"channel": channel}))
    return changes


def _suppressions(state: dict[str, str]) -> dict[str, str]:
    text = state.get("nurture_suppressions", "")
    pairs = (item.split(":", 1) for item in text.split("; ") if ":" in item)
    return {pair[0]: pair[1] for pair in pairs}


# -- pushing (the crm.push task) ---------------------------------------------------------------


@dataclass
class PushReport:
    """What one run of `push_pending` did, counted in changes."""

    pushed: int = 0
    failed: int = 0
    deferred: int = 0
    contacts: set[str] = field(default_factory=set)
    held_until: datetime | None = None
    """The CRM failed as a whole: nothing is tried before this."""


def push_pending(
    database: Database,
    crm: Crm,
    now: datetime,
    *,
    rounds: int = 10,
    contacts: int = BATCH_CONTACTS,
    pace: Callable[[], None] | None = None,
) -> PushReport:
    """Claim the next changes of up to `contacts` contacts and push them, for up to `rounds`
    batches. `now` is the clock for claims and retry times (tests pass a simulated one);
    `pace` waits for the policy's `crm` rate before each batch (RateLimited: stop for now)."""
    report = PushReport()
    for _ in range(rounds):
        if pace is not None:
            try:
                pace()
            except RateLimited:
                break  # the account is booked: the next tick goes on
        with transaction(database) as session:
            held = store.hold_until(session)
            if held is not None and now < held:
                report.held_until = held
                break
            claimed = store.claim(session, now, contacts, PER_CONTACT, LEASE)
        if not claimed:
            break
        deferred_before = report.deferred
        _push(database, crm, claimed, now, report)
        if report.deferred > deferred_before:
            break  # the CRM is struggling: the rest waits for the retry
    return report


def as_json(change: store.Claimed) -> dict[str, Any]:
    """A change as every CRM backend sees it (the webhook body, the outbox's JSON lines)."""
    return {"id": change.id, "type": change.kind, "delivery": change.delivery_id, **change.payload}


def _push(
    database: Database, crm: Crm, claimed: list[store.Claimed], now: datetime, report: PushReport
) -> None:
    leads = list(dict.fromkeys(c.lead_id for c in claimed))
    try:
        result = crm.push([as_json(c) for c in claimed])
    except TemporaryError as exc:
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        result = PushResult(deferred=dict.fromkeys(leads, _error(exc)), retry_after=retry_after)
    except PermanentError as exc:
        if len(leads) > 1:
            # one contact's bad value fails a whole batch: find it, and let the others through
            for lead_id in leads:
                _push(database, crm, [c for c in claimed if c.lead_id == lead_id], now, report)
            return
        result = PushResult(rejected={leads[0]: _error(exc)})
    _record(database, claimed, result, now, report)


def _record(
    database: Database,
    claimed: list[store.Claimed],
    result: PushResult,
    now: datetime,
    report: PushReport,
) -> None:
    by_lead: dict[str, list[store.Claimed]] = {}
    for change in claimed:
        by_lead.setdefault(change.lead_id, []).append(change)
    # the CRM failed as a whole (down, rate limited): every contact waits the same time, and
    # so do contacts not tried yet, so an outage costs a handful of probes, not one per tick
    outage = set(by_lead) <= set(result.deferred)
    together = retry_delay(max(c.attempts for c in claimed), result.retry_after)
    with transaction(database) as session:
        if outage:
            store.hold(session, now + together, now)
            report.held_until = now + together
        for lead_id, changes in by_lead.items():
            ids = [c.id for c in changes]
            report.contacts.add(lead_id)
            if lead_id in result.rejected:
                store.mark_failed(session, ids, result.rejected[lead_id], now)
                report.failed += len(ids)
            elif lead_id in result.deferred:
                wait = together if outage else retry_delay(changes[0].attempts, result.retry_after)
                store.mark_retry(session, ids, result.deferred[lead_id], now + wait)
                report.deferred += len(ids)
            else:
                store.mark_pushed(session, ids, now)
                report.pushed += len(ids)


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """Retry-After when the CRM gave one; else 5 s, 10 s, 20 s … up to 5 minutes, jittered.
    `attempts` counts the tries before this one, so this failure is the `attempts + 1`th."""
    return backoff(attempts + 1, first=FIRST_RETRY, longest=LONGEST_RETRY, retry_after=retry_after)


def _error(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return f"{code}: {exc}" if code else str(exc)


def hubspot_setup(hubspot: HubSpotCrm) -> list[str]:
    """`nurture crm setup`: the property group and every property in PROPERTIES."""
    group = {"name": PROPERTY_GROUP, "label": "Nurture"}
    return hubspot.ensure_properties(group, [p.__dict__ for p in PROPERTIES])
