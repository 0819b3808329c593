"""The mailbox poller (docs/inbox.md): read what arrived since the last poll, classify it
(worker.inbox.classify), match it to the step run and lead it answers, and emit `replied`,
`email_bounced` or `unsubscribed` through ingest. Processed messages are flagged (and moved
when a folder is set), never deleted; one that cannot be read stays where it is.

Each message is handled in one transaction that first inserts its row on a unique key
(mailbox, UIDVALIDITY, UID): two polls at once act on it once. Events carry an idempotency id
from the Message-ID, so a mailbox rebuilt under a new UIDVALIDITY emits nothing twice either.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from integrations.imap import ImapError, ImapMailbox, ImapSettings, settings_from
from worker.inbox import repository as store
from worker.inbox.classify import Inbound, Kind, classify
from worker.ingest.repository import lead_identity
from worker.ingest.schemas import EventIn
from worker.ingest.service import ingest
from worker.kit import metrics
from worker.kit.clock import Clock, utcnow
from worker.kit.errors import NotConfigured
from worker.kit.signing import verify
from worker.runtime.process import Runtime
from worker.sending.email import mailto_token
from worker.sending.reply_tokens import step_run_of_address
from worker.store.db import transaction
from worker.store.leads import find_lead
from worker.store.polls import record_poll
from worker.store.tables import LeadRow, StepRunRow

log = logging.getLogger("nurture.inbox")
BATCH = 200
"""Messages read per poll at most: a backlog drains over a few polls."""
IDLE_SECONDS = 25 * 60.0
"""IDLE is re-issued well before the 29 minutes after which a server may end it (RFC 2177)."""
OURS = re.compile(r"^<([0-9a-f]{32})@[^<>@\s]+>$")
"""The Message-ID every email gets (worker.sending.email.message_id): `<{step_run_id}@{domain}>`;
the step run must exist for a match."""
EVENT_OF = {
    Kind.REPLY: "replied",
    Kind.BOUNCE: "email_bounced",
    Kind.COMPLAINT: "unsubscribed",
    Kind.UNSUBSCRIBE: "unsubscribed",
}
MESSAGE_STATUS = {Kind.BOUNCE: "bounced", Kind.COMPLAINT: "complained"}


class InboxNotConfigured(NotConfigured):
    """NURTURE_IMAP_HOST is not set."""


@dataclass(frozen=True)
class Match:
    lead: LeadRow
    run: StepRunRow | None
    by: str
    """message_id (In-Reply-To, References, a report's original) | token | sender | recipient"""


@dataclass(frozen=True)
class Handled:
    kind: Kind
    event: str | None = None
    """The event type emitted, if any."""


@dataclass
class Polled:
    read: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    """Messages another poll had already handled."""

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds.items())) or "nothing new"
        events = ", ".join(f"{n} {e}" for e, n in sorted(self.events.items())) or "no events"
        return f"read {self.read} message(s): {kinds}; {events}"


def mailbox_settings(runtime: Runtime) -> ImapSettings:
    options = settings_from(runtime.config)
    if options is None:
        raise InboxNotConfigured("set NURTURE_IMAP_HOST (and _USERNAME, _PASSWORD) first")
    return options


def poll(runtime: Runtime, clock: Clock = utcnow) -> Polled:
    """One pass over the mailbox from where the last one stopped."""
    options = mailbox_settings(runtime)
    with ImapMailbox(options) as mailbox:
        return poll_mailbox(runtime, options, mailbox, clock)


def poll_mailbox(
    runtime: Runtime, options: ImapSettings, mailbox: ImapMailbox, clock: Clock = utcnow
) -> Polled:
    """One pass over an open mailbox from where the last one stopped."""
    polled = Polled()
    with transaction(runtime.database) as session:
        stored = store.position(session, options.name)
    # a new UIDVALIDITY means the folder's UIDs were reassigned: read it all again (the
    # events' idempotency ids keep what was emitted before from being emitted again)
    last = stored[1] if stored is not None and stored[0] == mailbox.uidvalidity else 0
    for uid in mailbox.uids_after(last, BATCH):
        raw = mailbox.fetch(uid)
        if raw is None:
            continue
        polled.read += 1
        handled = handle(runtime, options, mailbox.uidvalidity, uid, raw, clock())
        if handled is None:
            polled.skipped += 1
            continue
        polled.kinds[handled.kind.value] += 1
        metrics.count_inbox(handled.kind.value)
        if handled.event:
            polled.events[handled.event] += 1
        if handled.kind is not Kind.UNPARSEABLE:
            mark_processed(runtime, mailbox, uid)
    with transaction(runtime.database) as session:
        record_poll(session, options.name, clock())  # the operations page shows when
    return polled


def watch(
    runtime: Runtime,
    stop: threading.Event,
    on_poll: Callable[[Polled], None] = lambda polled: None,
    *,
    idle_seconds: float = IDLE_SECONDS,
    retry_seconds: float = 30.0,
    clock: Clock = utcnow,
) -> None:
    """Keep the mailbox read until `stop` is set: poll, then wait with IDLE until something
    arrives (re-issued every `idle_seconds`), and poll again; without IDLE, poll every
    NURTURE_INBOX_POLL_INTERVAL. A lost connection or database is logged and tried again
    after `retry_seconds`: the stored position says where to go on."""
    options = mailbox_settings(runtime)
    while not stop.is_set():
        try:
            with ImapMailbox(options) as mailbox:
                if not mailbox.can_idle:
                    log.info("inbox: %s offers no IDLE; polling every %.0f s", options.host,
                             runtime.config.inbox_poll_interval)  # fmt: skip
                while not stop.is_set():
                    polled = poll_mailbox(runtime, options, mailbox, clock)
                    on_poll(polled)
                    if polled.read + polled.skipped >= BATCH:
                        continue  # a backlog: read on before waiting
                    if mailbox.can_idle:
                        mailbox.wait_for_news(idle_seconds, stop.is_set)
                    else:
                        stop.wait(runtime.config.inbox_poll_interval)
        except (ImapError, SQLAlchemyError) as exc:
            log.warning("inbox: %s; trying again in %.0f s", exc, retry_seconds)
            stop.wait(retry_seconds)


def mark_processed(runtime: Runtime, mailbox: ImapMailbox, uid: int) -> None:
    config = runtime.config
    mailbox.flag(uid, config.imap_processed_flag)
    if config.imap_processed_folder:
        mailbox.move(uid, config.imap_processed_folder)


def handle(
    runtime: Runtime, options: ImapSettings, uidvalidity: int, uid: int, raw: bytes, now: datetime
) -> Handled | None:
    """Classify, match and emit in one transaction; None when another poll had it first."""
    inbound = classify(raw)
    try:
        handled = _claim_and_act(runtime, options, uidvalidity, uid, inbound, now)
    except SQLAlchemyError:
        raise  # the database is down or contended: stop here, the next poll starts here again
    except Exception:
        # a message that breaks the matching must not block every message after it
        log.exception("inbox: message %d of %s could not be handled", uid, options.name)
        inbound = Inbound(Kind.UNPARSEABLE, message_id=inbound.message_id, why="error")
        handled = _claim_and_act(runtime, options, uidvalidity, uid, inbound, now)
    if handled is not None and handled.kind is Kind.UNPARSEABLE:
        log.warning(
            "inbox: message %d of %s cannot be read (%s); left in place",
            uid, options.name, inbound.why,
        )  # fmt: skip
    return handled


def _claim_and_act(
    runtime: Runtime,
    options: ImapSettings,
    uidvalidity: int,
    uid: int,
    inbound: Inbound,
    now: datetime,
) -> Handled | None:
    with transaction(runtime.database) as session:
        claimed = store.claim(session, options.name, uidvalidity, uid, now)
        if claimed is None:
            return None
        fallback_key = f"{options.name}:{uidvalidity}:{uid}"  # for a message without an id
        handled = act(session, runtime, inbound, claimed, now, fallback_key)
        store.advance(session, options.name, uidvalidity, uid, now)
    return handled


def act(
    session: Session,
    runtime: Runtime,
    inbound: Inbound,
    claimed: int,
    now: datetime,
    fallback_key: str,
) -> Handled:
    """Match the message, emit its event, record what it was on the claimed row."""
    unsubscribing = _mailto_unsubscribe(session, runtime, inbound)
    if unsubscribing is not None:
        inbound = replace(inbound, kind=Kind.UNSUBSCRIBE)
    found = unsubscribing or (
        match(session, runtime, inbound) if inbound.kind is not Kind.UNPARSEABLE else None
    )
    event_type = EVENT_OF.get(inbound.kind)
    identity = lead_identity(found.lead) if found is not None else None
    event_id: str | None = None
    emitted: str | None = None
    if found is not None and event_type is not None and identity is not None:
        event = EventIn(
            id=_event_key(event_type, inbound.message_id or fallback_key),
            type=event_type,
            occurred_at=_occurred(inbound, now),
            lead=identity,
            properties=_properties(inbound, found),
        )
        ingested = ingest(session, runtime.engine, event, now, source="inbox")
        event_id = ingested.event_id
        emitted = None if ingested.duplicate else event_type
        status = MESSAGE_STATUS.get(inbound.kind)
        if status is not None and found.run is not None:
            store.mark_message(session, found.run.id, status, now)
    store.record(
        session,
        claimed,
        kind=inbound.kind.value,
        message_id=(inbound.message_id or "")[:500] or None,
        matched_by=found.by if found is not None else None,
        lead_id=found.lead.id if found is not None else None,
        step_run_id=found.run.id if found is not None and found.run is not None else None,
        event_id=event_id,
        detail=(inbound.status or inbound.why or "")[:200] or None,
    )
    return Handled(inbound.kind, emitted)


def match(session: Session, runtime: Runtime, inbound: Inbound) -> Match | None:
    """The step run and lead a message answers: by our Message-ID in In-Reply-To/References
    (or in a report's original message), then by a signed reply+TOKEN address, then by the
    sender's address (for a report: the failed recipient's) and the lead's last email."""
    ours = [m[1] for m in map(OURS.match, inbound.in_reply_to) if m is not None]
    for run_id in [*ours, *inbound.step_runs]:
        found = _by_run(session, run_id, "message_id")
        if found is not None:
            return found
    for address in inbound.addressed_to:
        run_id = step_run_of_address(runtime.config, address)
        found = _by_run(session, run_id, "token") if run_id else None
        if found is not None:
            return found
    reported = inbound.kind in (Kind.BOUNCE, Kind.DELAYED, Kind.COMPLAINT)
    addresses = inbound.recipients if reported else (inbound.sender,)
    for candidate in addresses:
        lead = find_lead(session, email=candidate) if candidate else None
        if lead is not None:
            by = "recipient" if reported else "sender"
            return Match(lead, store.last_email_sent(session, lead.id), by)
    return None


def _mailto_unsubscribe(session: Session, runtime: Runtime, inbound: Inbound) -> Match | None:
    """A mail to the mailto List-Unsubscribe address (worker.sending.email): its subject carries the
    signed token of the lead and channel, as the HTTPS link does. Mail clients send it on the
    person's behalf, so whatever else it looks like, it is their request."""
    if inbound.kind is Kind.UNPARSEABLE or not inbound.subject:
        return None
    token = mailto_token(inbound.subject)
    data = verify(runtime.config, token) if token else None
    if data is None or "k" in data or data.get("c") != "email":
        return None
    lead = store.lead(session, str(data.get("l")))
    return Match(lead, None, "unsubscribe_token") if lead is not None else None


def _by_run(session: Session, run_id: str, by: str) -> Match | None:
    run = store.step_run(session, run_id)
    lead = store.lead(session, run.lead_id) if run is not None else None
    return Match(lead, run, by) if lead is not None else None


def _properties(inbound: Inbound, found: Match) -> dict[str, Any]:
    run = found.run
    properties: dict[str, Any] = {
        "channel": "email",
        "sequence": run.sequence_id if run is not None else None,
        "step": run.step_id if run is not None else None,
        "step_run": run.id if run is not None else None,
        "matched_by": found.by,
        "message_id": inbound.message_id,
    }
    if inbound.kind is Kind.REPLY:
        properties["subject"] = (inbound.subject or "")[:200]
    elif inbound.kind is Kind.BOUNCE:
        properties.update(
            permanent=True, status=inbound.status, recipients=list(inbound.recipients)
        )
    elif inbound.kind is Kind.COMPLAINT:
        properties.update(reason="complaint", feedback_type=inbound.status)
    elif inbound.kind is Kind.UNSUBSCRIBE:
        properties.update(reason="mailto")
    return properties


def _event_key(event_type: str, message_key: str) -> str:
    digest = hashlib.sha256(message_key.encode(errors="replace")).hexdigest()[:40]
    return f"email:{event_type}:{digest}"


def _occurred(inbound: Inbound, now: datetime) -> datetime:
    """The message's Date, unless it lies in the future (a wrong clock): then now."""
    sent = inbound.sent_at
    return sent if sent is not None and sent <= now else now
