"""Twilio's deliveries recorded: a status callback moves a sent message's status forward (and
emits `sms_delivered` or `sms_failed`); a callback naming a step run left `unknown` confirms it
sent; an inbound text is ingested, a WhatsApp one opening the lead's 24-hour window. Each is
one transaction under the lead's lock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlmodel import Session

from worker.crm.changes import record_message_status
from worker.definitions.event_types import BUILT_IN
from worker.engine.core import Engine
from worker.ingest.intake import atomically, count_ingested
from worker.ingest.repository import lead_identity
from worker.ingest.schemas import EventIn
from worker.ingest.service import Arrival, Ingested, ingest
from worker.ingest.sources.twilio import Inbound, moves_forward, status_events
from worker.kit import metrics
from worker.runtime.process import Runtime
from worker.store.locks import lock_lead
from worker.store.messages import find_by_provider_id, set_status
from worker.store.tables import LeadRow, MessageRow, StepRunRow
from worker.world.confirm import Confirmation, confirm_sent


@dataclass(frozen=True)
class StatusRecorded:
    message_sid: str
    status: str | None
    """The stored status now; None for an unknown message."""
    changed: bool
    events: list[str] = field(default_factory=list)
    confirmed: bool = False
    """The callback confirmed sent a step run left `unknown`."""


def record_status(
    runtime: Runtime,
    params: Mapping[str, str],
    message_sid: str,
    status: str,
    step_run_id: str | None = None,
) -> StatusRecorded:
    """A status callback: the message's status moves forward only. A message we never recorded
    changes nothing, unless the callback names (in its URL, which Twilio signs) a step run left
    `unknown` for the number it went to: that step is then confirmed sent."""
    return atomically(
        runtime,
        lambda session, now: _record_status(
            runtime.engine, session, now, params, message_sid, status, step_run_id
        ),
    )


def _record_status(
    engine: Engine,
    session: Session,
    now: datetime,
    params: Mapping[str, str],
    message_sid: str,
    status: str,
    step_run_id: str | None = None,
) -> StatusRecorded:
    found = find_by_provider_id(session, message_sid)
    confirmed = False
    if found is None and step_run_id:
        found = _confirm_unknown(engine, session, now, params, message_sid, step_run_id)
        confirmed = found is not None
    if found is None:
        return StatusRecorded(message_sid=message_sid, status=None, changed=False)
    # the lead's lock serializes this with other callbacks and sends for the same lead; the
    # message is then re-read, so two callbacks racing cannot both think they moved it
    lead_row = lock_lead(session, found.lead_id)
    message = find_by_provider_id(session, message_sid, lock=True)
    assert message is not None
    current = message.status
    if not moves_forward(current, status):
        return StatusRecorded(
            message_sid=message_sid, status=current, changed=confirmed, confirmed=confirmed
        )
    set_status(session, message, status, now)
    record_message_status(session, lead_row, message, status, now)
    emitted = []
    identity = lead_identity(lead_row) if lead_row is not None else None
    for key, kind, properties in status_events(
        message_sid, current, status, params, message.channel
    ):
        if identity is not None:  # an erased lead keeps no identity and hears nothing more
            event = EventIn(id=key, type=kind, lead=identity, properties=properties)
            if not ingest(session, engine, event, now, source="twilio").duplicate:
                emitted.append(kind)
                metrics.count_events("twilio", [kind], BUILT_IN)
    return StatusRecorded(
        message_sid=message_sid, status=status, changed=True, events=emitted, confirmed=confirmed
    )


def _confirm_unknown(
    engine: Engine,
    session: Session,
    now: datetime,
    params: Mapping[str, str],
    message_sid: str,
    step_run_id: str,
) -> MessageRow | None:
    """The message the step run left `unknown`, now recorded as Twilio accepted it, when the
    run is an unknown text to the callback's `To`; else None."""
    row = session.get(StepRunRow, step_run_id)
    if row is None or row.status != "unknown" or row.channel not in ("sms", "whatsapp"):
        return None
    lead_row = session.get(LeadRow, row.lead_id)
    to = params.get("To", "").strip()
    if lead_row is None or not lead_row.phone or _number(to) != lead_row.phone:
        return None  # not the number that step was for: not our record to complete
    confirmation = Confirmation(
        step_run_id=step_run_id,
        provider_message_id=message_sid,
        status="accepted",  # the callback's own status then moves it on, with its events
        sent_at=row.claimed_at or now,
        to=lead_row.phone,
    )
    return confirm_sent(session, engine, confirmation, now)


def _number(address: str) -> str:
    return address.split(":", 1)[1].strip() if address.lower().startswith("whatsapp:") else address


def record_inbound(runtime: Runtime, inbound: Inbound) -> Ingested:
    """An inbound SMS or WhatsApp text, ingested like any event."""

    def record(session: Session, now: datetime) -> Ingested:
        found = ingest(session, runtime.engine, inbound.event, now, source="twilio")
        if inbound.channel == "whatsapp" and not found.duplicate:
            _opened_whatsapp_session(session, found.lead_id, now)
        return found

    found = atomically(runtime, record)
    count_ingested(runtime, [Arrival(inbound.event, "twilio")], [found])
    return found


def _opened_whatsapp_session(session: Session, lead_id: str, now: datetime) -> None:
    """The lead's last WhatsApp message opens the 24-hour window for free-form replies; it is
    written in the ingest's transaction, on the lead row ingest already holds locked."""
    row = session.get(LeadRow, lead_id)
    if row is None:  # pragma: no cover - ingest has just written it
        return
    if row.last_inbound_whatsapp_at is None or row.last_inbound_whatsapp_at < now:
        row.last_inbound_whatsapp_at = now
        session.add(row)
