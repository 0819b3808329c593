"""Retention: what is deleted after how long, a batch per transaction (docs/operations.md).

- CRM outbox: changes pushed more than `crm_outbox_retention_days` ago (pending and refused
  ones stay).
- Events: raw events that arrived more than `event_retention_days` ago (0: kept forever). The
  engine never reads them back (a lead's history, the events seen by each enrollment and the
  entries behind a score live on the lead and enrollment rows), but a goal window reads them
  for the funnel, so the retention must be longer than every `goal.within`: a shorter one is
  refused, loudly, and nothing is pruned. Consent changes (`unsubscribed`, `resubscribed`) are
  kept: they are the record of consent, and the unsubscribe page numbers a lead's changes by
  them.
- Idempotency keys: a pruned event's key moves to `event_keys` and is kept until
  `idempotency_retention_days` after the event arrived.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from worker.crm.repository import prune_pushed
from worker.definitions.catalog import Catalog
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.event_keys import oldest_event, prune_events, prune_keys
from worker.store.switches import write_switch
from worker.store.tables import SwitchRow

BATCH = 2_000
"""Rows deleted per transaction: short locks, and a long backlog still moves."""
WINDOW = timedelta(days=1)
"""Events are pruned a day of arrivals at a time."""
RUN_SECONDS = 120.0
"""How long one run goes on; a longer backlog continues at the next run."""
KEPT_TYPES = ("unsubscribed", "resubscribed")
EVENTS_MARK = "retention:events_before"
CRM_MARK = "retention:crm_pushed_before"
"""`switches` rows: the time before which retention has deleted what it deletes (a lead's
export says so; the next run of event retention starts there)."""


@dataclass(frozen=True)
class Pruned:
    crm_changes: int = 0
    events: int = 0
    keys: int = 0
    problem: str | None = None
    """Why events were not pruned (a retention shorter than a goal window)."""

    def summary(self) -> str:
        done = f"pruned {self.crm_changes} CRM changes, {self.events} events, {self.keys} keys"
        return f"{done}; {self.problem}" if self.problem else done


def retention_problem(catalog: Catalog, days: int) -> str | None:
    """Why `days` of event retention is too short for the loaded sequences, or None."""
    if days == 0:
        return None
    windows = [
        (definition.model.goal.within.approximate(), sequence_id)
        for sequence_id, definition in sorted(catalog.sequences.items())
        if definition.model.goal is not None
    ]
    if not windows:
        return None
    longest, sequence_id = max(windows)
    if timedelta(days=days) > longest:
        return None
    return (
        f"NURTURE_EVENT_RETENTION_DAYS={days} is not longer than the goal window of sequence "
        f"{sequence_id!r} ({longest.days}d{'' if not longest.seconds else '+'}): its conversions "
        "are counted from the events, so events must be kept longer than every goal window; "
        f"set it above {longest.days} days, or 0 to keep events forever. No event is pruned "
        "until then"
    )


def prune_expired(runtime: Runtime, now: datetime, seconds: float = RUN_SECONDS) -> Pruned:
    """One run of retention over the CRM outbox, the events and the kept keys."""
    config = runtime.config
    deadline = time.monotonic() + seconds
    crm_before = now - timedelta(days=config.crm_outbox_retention_days)
    keys_after = now - timedelta(days=config.idempotency_retention_days)
    crm, _ = _in_batches(runtime, deadline, lambda s: prune_pushed(s, crm_before, BATCH))
    if crm:
        _mark(runtime, CRM_MARK, crm_before, now)
    events, problem = 0, retention_problem(runtime.catalog, config.event_retention_days)
    if config.event_retention_days and problem is None:
        before = now - timedelta(days=config.event_retention_days)
        events = _prune_events(runtime, now, before, keys_after, deadline)
    keys, _ = _in_batches(runtime, deadline, lambda s: prune_keys(s, keys_after, BATCH))
    return Pruned(crm_changes=crm, events=events, keys=keys, problem=problem)


def _prune_events(
    runtime: Runtime, now: datetime, before: datetime, keys_after: datetime, deadline: float
) -> int:
    """Events that arrived before `before`, a day of arrivals at a time from where the last
    run got to (`EVENTS_MARK`: everything prunable before it is gone), or from the oldest."""
    with transaction(runtime.database) as session:
        marked = session.get(SwitchRow, EVENTS_MARK)
        start = datetime.fromisoformat(marked.value) if marked else oldest_event(session)
    if start is None or start >= before:
        return 0
    pruned, reached = 0, start
    while reached < before:
        window = (reached, min(reached + WINDOW, before))

        def batch(session: Session, window: tuple[datetime, datetime] = window) -> int:
            return prune_events(session, window, keys_after, KEPT_TYPES, BATCH)

        count, finished = _in_batches(runtime, deadline, batch)
        pruned += count
        if not finished:
            break
        reached = window[1]
    if reached > start:
        _mark(runtime, EVENTS_MARK, reached, now)
    return pruned


def pruned_before(session: Session) -> dict[str, str]:
    """What retention has deleted so far, for a lead's export: the cutoffs by kind."""
    found = {}
    for name, label in ((EVENTS_MARK, "events_before"), (CRM_MARK, "crm_changes_before")):
        row = session.get(SwitchRow, name)
        if row is not None:
            found[label] = row.value
    return found


def _in_batches(
    runtime: Runtime, deadline: float, batch: Callable[[Session], int]
) -> tuple[int, bool]:
    """Batches until one comes back short (True: all done) or the run's time is up."""
    done = 0
    while True:
        with transaction(runtime.database) as session:
            count = batch(session)
        done += count
        if count < BATCH:
            return done, True
        if time.monotonic() > deadline:
            return done, False


def _mark(runtime: Runtime, name: str, before: datetime, now: datetime) -> None:
    with transaction(runtime.database) as session:
        write_switch(session, name, before.isoformat(), now, "retention")
