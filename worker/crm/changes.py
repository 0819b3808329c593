"""What the CRM hears (SPEC §8): every change worth telling it — enrolled, step sent, message
status, exited, completed, paused / resumed, score and segment changed, suppressed — becomes a
row of the CRM outbox in the transaction that made the change (`record_changes`, called from
`worker.world.unit.finish`). Each row carries the contact's properties after the change, so a
CRM that only wants the latest state (HubSpot's upsert) takes the last row of each contact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from worker.crm import repository as store
from worker.engine import scoring
from worker.engine.core import Engine
from worker.engine.state import Entry, LeadWorld, Outcome
from worker.store.tables import LeadRow, MessageRow, StepRunRow

if TYPE_CHECKING:
    from worker.store.worlds import Loaded

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
