"""Events in, each delivery in a transaction of its own: one event, a batch (falling back to
one event at a time), or any unit of ingest work, retried when it loses a unique-key race."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session

from worker.definitions.event_types import known_event_types
from worker.ingest.schemas import EventIn
from worker.ingest.service import Ingested, ingest, ingest_batch
from worker.kit import metrics
from worker.kit.clock import utcnow
from worker.runtime.process import Runtime
from worker.store.db import transaction

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotStored:
    """An event the database refused (a value its column cannot hold, say): only this event's
    result is lost, never the batch's others."""

    message: str


def atomically(runtime: Runtime, work: Callable[[Session, datetime], T]) -> T:
    """One transaction, retried: a concurrent insert of the same new lead or event id loses on
    a unique key, and the retry then finds what the winner wrote."""
    for attempt in range(3):
        try:
            with transaction(runtime.database) as session:
                return work(session, utcnow())
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError  # pragma: no cover


def apply(runtime: Runtime, event: EventIn, *, source: str = "api") -> Ingested:
    """One event, one transaction. A concurrent insert of the same id or the same new lead
    loses on a unique key; the second try then finds what the first one wrote."""
    found = atomically(
        runtime, lambda session, now: ingest(session, runtime.engine, event, now, source=source)
    )
    count_ingested(runtime, source, [event], [found])
    return found


def apply_batch(
    runtime: Runtime, events: list[EventIn], *, source: str = "api"
) -> list[Ingested | NotStored]:
    """Many events in one transaction, set-based; a result (or a refusal) per event in order.

    A concurrent insert of the same id or new lead fails the batch on a unique key: it is
    tried again and finds what the other wrote. A batch that still fails, for whatever reason,
    is applied event by event (`apply`), so one event the database refuses costs only its own
    result, never the others'."""
    for attempt in range(2):
        try:
            with transaction(runtime.database) as session:
                found: list[Ingested | NotStored] = list(
                    ingest_batch(session, runtime.engine, events, utcnow(), source=source)
                )
            count_ingested(runtime, source, events, found)
            return found
        except IntegrityError:
            if attempt == 0:
                continue
            log.warning("a batch of %d events failed twice: applying them one by one", len(events))
        except Exception:
            log.exception("a batch of %d events failed: applying them one by one", len(events))
        break
    return [apply_or_error(runtime, event, source=source) for event in events]


def apply_or_error(
    runtime: Runtime, event: EventIn, *, source: str = "api"
) -> Ingested | NotStored:
    """`apply`, with a refusal of the database as this event's result rather than an error."""
    try:
        return apply(runtime, event, source=source)
    except (IntegrityError, DataError) as exc:
        return NotStored(f"the database refused this event: {type(exc.orig).__name__}")


def count_ingested(
    runtime: Runtime,
    source: str,
    events: list[EventIn],
    results: list[Ingested] | list[Ingested | NotStored],
) -> None:
    """`nurture_events_ingested_total`: the events recorded (not repeats, not refusals)."""
    recorded = [
        event.type
        for event, result in zip(events, results, strict=True)
        if isinstance(result, Ingested) and not result.duplicate
    ]
    metrics.count_events(source, recorded, known_event_types(runtime.catalog))
