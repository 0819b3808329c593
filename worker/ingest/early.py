"""The early answer (`Prefer: respond-async`): an event is validated, written to the intake in
one short transaction and answered 202 with the id it will be stored under; it is applied
later from the intake, in arrival order, and deleted in the transaction that applies it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session

from worker.ingest.intake import atomically
from worker.ingest.schemas import EventIn
from worker.ingest.service import Arrival, Ingested, Queued, ingest_arrivals, ingest_one
from worker.kit.clock import utcnow
from worker.kit.ids import new_id
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.events import find_by_keys
from worker.store.intake import (
    IntakeRow,
    add_queued,
    hold_drain,
    mark_failed,
    oldest_queued,
    queued_by_keys,
    remove_queued,
)

log = logging.getLogger(__name__)
DRAIN_LIMIT = 500
"""Intake rows one drain transaction applies together."""


@dataclass(frozen=True)
class Drained:
    applied: int
    busy: bool = False
    """Another drainer held the intake: nothing was looked at."""


def queue_arrivals(
    runtime: Runtime, arrivals: list[Arrival]
) -> list[Queued | Ingested | Exception]:
    """Queue each event in one transaction, a result per event in order: a repeated id is a
    duplicate of the stored event (`Ingested`) or of the queued one (`Queued`)."""
    try:
        return list(atomically(runtime, lambda session, now: _queue(session, arrivals, now)))
    except Exception:
        if len(arrivals) == 1:
            raise
        log.exception("queuing %d events failed: queuing them one by one", len(arrivals))
    results: list[Queued | Ingested | Exception] = []
    for arrival in arrivals:
        try:
            results.extend(_queue_alone(runtime, arrival))
        except Exception as exc:  # that caller's error alone
            results.append(exc)
    return results


def _queue_alone(runtime: Runtime, arrival: Arrival) -> list[Queued | Ingested]:
    return atomically(runtime, lambda session, now: _queue(session, [arrival], now))


def _queue(session: Session, arrivals: list[Arrival], now: datetime) -> list[Queued | Ingested]:
    keys = [a.event.id for a in arrivals if a.event.id is not None]
    applied = find_by_keys(session, keys)
    queued = queued_by_keys(session, keys)
    results: list[Queued | Ingested] = []
    rows = []
    for arrival in arrivals:
        key = arrival.event.id
        if key is not None and key in applied:
            results.append(Ingested(*applied[key], duplicate=True))
            continue
        if key is not None and key in queued:
            results.append(Queued(queued[key], duplicate=True))
            continue
        event_id = new_id()
        if key is not None:
            queued[key] = event_id
        rows.append(
            {
                "event_id": event_id,
                "idempotency_key": key,
                "source": arrival.source,
                "payload": arrival.event.model_dump(mode="json"),
                "received_at": now,
            }
        )
        results.append(Queued(event_id))
    add_queued(session, rows)
    return results


def drain(runtime: Runtime, limit: int = DRAIN_LIMIT) -> Drained:
    """Apply the oldest queued events together and delete their rows, in one transaction that
    only one drainer at a time may run. When that fails, one at a time, and an event that
    still fails is marked failed (logged; it stays for an operator)."""
    try:
        with transaction(runtime.database) as session:
            if not hold_drain(session):
                return Drained(0, busy=True)
            rows = oldest_queued(session, limit)
            if not rows:
                return Drained(0)
            arrivals = [_arrival(row) for row in rows]
            ingest_arrivals(session, runtime.engine, arrivals, utcnow())
            remove_queued(session, [row.id for row in rows if row.id is not None])
            return Drained(len(rows))
    except Exception:
        log.exception("applying queued events failed: applying them one by one")
    applied = 0
    for _ in range(limit):
        found = _drain_one(runtime)
        if found is None:
            break
        applied += found
    return Drained(applied)


def drain_queued(runtime: Runtime, seconds: float = 20.0) -> int:
    """Drain until the intake is empty, another drainer holds it, or `seconds` have passed (the
    beat's sweep of what a killed API process left); how many events were applied."""
    deadline = time.monotonic() + seconds
    total = 0
    while time.monotonic() < deadline:
        found = drain(runtime)
        total += found.applied
        if found.busy or not found.applied:
            break
    return total


def _drain_one(runtime: Runtime) -> int | None:
    """The oldest queued event applied on its own; 0 when the database refuses it (it is then
    marked failed), None when there is nothing left or another drainer holds the intake."""
    for attempt in range(2):
        row_id: int | None = None
        try:
            with transaction(runtime.database) as session:
                if not hold_drain(session):
                    return None
                rows = oldest_queued(session, 1)
                if not rows:
                    return None
                row_id = rows[0].id
                ingest_one(session, runtime.engine, _arrival(rows[0]), utcnow())
                remove_queued(session, [rows[0].id or 0])
                return 1
        except IntegrityError as exc:  # a concurrent insert of the same id or lead: once more
            if attempt == 0 or row_id is None:
                continue
            refused: Exception = exc
        except (DataError, ValidationError) as exc:
            if row_id is None:
                raise
            refused = exc
        log.error("a queued event could not be applied and is marked failed: %s", refused)
        with transaction(runtime.database) as session:
            mark_failed(session, row_id, utcnow(), f"{type(refused).__name__}: {refused}")
        return 0
    return None


def _arrival(row: IntakeRow) -> Arrival:
    return Arrival(EventIn.model_validate(row.payload), row.source, row.event_id, row.received_at)
