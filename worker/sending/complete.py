"""Writing accepted sends back into their leads' worlds: the step turns `sent`, the engine
releases the next step, and the timeline, the `email_sent` event and the CRM outbox are
written, set-based for a whole batch.

Exactly once: a send is written back only while its row is still `sending` and its message is
recorded (`store.steps.add_message`), read under its lead's lock, so the batch that sent it and
the sweeper (for a batch whose worker died) can both try and only one does it. Nothing here
sends anything.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session

from worker.kit.clock import Clock
from worker.runtime.process import Runtime
from worker.sending.claim import Claimed, find_run
from worker.store.db import transaction
from worker.store.locks import lock_leads
from worker.store.steps import (
    Accepted,
    accepted_awaiting,
    accepted_messages,
    set_provider_ids,
)
from worker.store.world_writes import deferred_writes
from worker.store.worlds import load_worlds
from worker.world.unit import finish

log = logging.getLogger("nurture")
SWEEP_LIMIT = 1000
"""Accepted sends one sweep writes back at most, 100 leads per transaction."""
SWEEP_CHUNK = 100


def write_back(
    runtime: Runtime, accepted: list[tuple[Claimed, Accepted]], clock: Clock
) -> dict[str, str]:
    """Write a batch's accepted sends back. One that cannot be stays accepted (its message is
    recorded, nothing is resent) and the sweeper writes it back later."""
    by_lead: dict[str, list[str]] = {}
    for claimed, _ in accepted:
        by_lead.setdefault(claimed.lead_id, []).append(claimed.step_run_id)
    messages = {claimed.step_run_id: message for claimed, message in accepted}
    _write(runtime, by_lead, clock, messages)
    return dict.fromkeys(messages, "sent")


def complete_accepted(runtime: Runtime, now: datetime) -> int:
    """The sweeper's part: accepted sends handed over longer ago than a lease (their batch is
    over, or its worker died) and not written back yet. Returns how many it wrote back."""
    before = now - timedelta(seconds=runtime.config.lease_seconds)
    with transaction(runtime.database) as session:
        waiting = accepted_awaiting(session, before, SWEEP_LIMIT)
    leads = list(waiting)
    done = 0
    for start in range(0, len(leads), SWEEP_CHUNK):
        chunk = {lead_id: waiting[lead_id] for lead_id in leads[start : start + SWEEP_CHUNK]}
        done += _write(runtime, chunk, lambda: now)
    if done:
        log.warning("wrote back %d accepted send(s) a worker left unrecorded", done)
    return done


def _write(
    runtime: Runtime,
    by_lead: dict[str, list[str]],
    clock: Clock,
    messages: dict[str, Accepted] | None = None,
) -> int:
    """`written` in one transaction; if that fails, one lead at a time, so one lead's trouble
    holds no other back (what still fails is logged and left to the next sweep)."""
    try:
        with transaction(runtime.database) as session:
            return written(runtime, session, by_lead, clock(), messages)
    except Exception:
        if len(by_lead) == 1:
            log.exception("accepted sends %s could not be written back; the sweeper tries "
                          "again", list(by_lead.values()))  # fmt: skip
            return 0
        log.exception("writing back the sends of %d leads together failed: one at a time",
                      len(by_lead))  # fmt: skip
    return sum(_write(runtime, {lead: ids}, clock, messages) for lead, ids in by_lead.items())


def written(
    runtime: Runtime,
    session: Session,
    by_lead: dict[str, list[str]],
    now: datetime,
    messages: dict[str, Accepted] | None = None,
) -> int:
    """Write back those of the given accepted sends still waiting for it, under their leads'
    locks; how many. `messages`: what their message rows say, when the caller knows (it
    recorded them); else they are read."""
    engine = runtime.engine
    lead_rows = lock_leads(session, by_lead)
    worlds = load_worlds(session, lead_rows.values(), now, sends=False)
    if messages is None:
        messages = accepted_messages(session, [i for ids in by_lead.values() for i in ids])
    provider_ids: dict[str, str | None] = {}
    with deferred_writes(session):
        for lead_id, step_run_ids in by_lead.items():
            loaded = worlds.get(lead_id)
            for step_run_id in step_run_ids:
                row = loaded.run_rows.get(step_run_id) if loaded else None
                message = messages.get(step_run_id)
                if loaded is None or row is None or row.status != "sending" or message is None:
                    continue  # written back already (or gone with an erased lead)
                run = find_run(loaded, step_run_id)
                outcome = engine.record_sent(
                    loaded.world, run, message.sent_at, subject=message.subject
                )
                finish(session, engine, loaded, outcome, now)
                provider_ids[step_run_id] = message.provider_message_id
    set_provider_ids(session, provider_ids)
    return len(provider_ids)
