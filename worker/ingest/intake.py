"""Events in, each delivery in a transaction of its own: one event, a batch (falling back to
one event at a time), or any unit of ingest work, retried when it loses a unique-key race."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session

from worker.definitions.event_types import known_event_types
from worker.ingest.schemas import EventIn
from worker.ingest.service import (
    Arrival,
    Ingested,
    Queued,
    ingest,
    ingest_arrivals,
    ingest_one,
)
from worker.kit import metrics
from worker.kit.clock import utcnow
from worker.runtime.process import Runtime
from worker.store.db import transaction
from worker.store.intake import queued_by_keys

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
    count_ingested(runtime, [Arrival(event, source)], [found])
    return found


def apply_arrival(runtime: Runtime, arrival: Arrival) -> Ingested:
    """`apply` for an arrival (its source, and an event id fixed earlier)."""
    found = atomically(
        runtime, lambda session, now: ingest_one(session, runtime.engine, arrival, now)
    )
    count_ingested(runtime, [arrival], [found])
    return found


def apply_batch(
    runtime: Runtime, events: list[EventIn], *, source: str = "api"
) -> list[Ingested | Queued | NotStored]:
    """Many events in one transaction, set-based; a result (or a refusal) per event in order.

    A concurrent insert of the same id or new lead fails the batch on a unique key: it is
    tried again and finds what the other wrote. A batch that still fails, for whatever reason,
    is applied event by event (`apply`), so one event the database refuses costs only its own
    result, never the others'."""
    found = _batch_or_none(runtime, [Arrival(event, source) for event in events])
    if found is not None:
        return list(found)
    return [apply_or_error(runtime, event, source=source) for event in events]


def apply_arrivals(
    runtime: Runtime, arrivals: list[Arrival]
) -> list[Ingested | Queued | Exception]:
    """`apply_batch` for events of several sources (coalesced single requests): a result per
    event in order, or the exception its own `apply` raised, so each caller's answer is the
    one it would have had alone (a refused event's error is its caller's alone)."""
    found = _batch_or_none(runtime, arrivals)
    if found is not None:
        return list(found)
    results: list[Ingested | Queued | Exception] = []
    for arrival in arrivals:
        try:
            results.append(apply_arrival(runtime, arrival))
        except Exception as exc:  # the caller raises it as `apply` would have
            results.append(exc)
    return results


def _batch_or_none(runtime: Runtime, arrivals: list[Arrival]) -> list[Ingested | Queued] | None:
    """The arrivals in one set-based transaction, tried twice on a unique-key race; None when
    the batch failed (the caller then applies them one by one)."""
    for attempt in range(2):
        try:
            with transaction(runtime.database) as session:
                found = _unless_queued(session, runtime, arrivals)
            count_ingested(runtime, arrivals, found)
            return found
        except IntegrityError:
            if attempt == 0:
                continue
            log.warning(
                "a batch of %d events failed twice: applying them one by one", len(arrivals)
            )
        except Exception:
            log.exception("a batch of %d events failed: applying them one by one", len(arrivals))
            return None
    return None


def _unless_queued(
    session: Session, runtime: Runtime, arrivals: list[Arrival]
) -> list[Ingested | Queued]:
    """`ingest_arrivals`, but a repeat of an event answered early and still queued is its
    duplicate (the queued copy keeps the id its early answer gave)."""
    keys = [a.event.id for a in arrivals if a.event.id is not None and a.event_id is None]
    queued = queued_by_keys(session, keys)
    fresh = [a for a in arrivals if a.event.id not in queued]
    applied = iter(ingest_arrivals(session, runtime.engine, fresh, utcnow()))
    return [
        Queued(queued[a.event.id], duplicate=True)
        if a.event.id is not None and a.event.id in queued
        else next(applied)
        for a in arrivals
    ]


def apply_or_error(
    runtime: Runtime, event: EventIn, *, source: str = "api"
) -> Ingested | NotStored:
    """`apply`, with a refusal of the database as this event's result rather than an error."""
    try:
        return apply(runtime, event, source=source)
    except (IntegrityError, DataError) as exc:
        return NotStored(f"the database refused this event: {type(exc.orig).__name__}")


def count_ingested(
    runtime: Runtime, arrivals: Sequence[Arrival], results: Sequence[object]
) -> None:
    """`nurture_events_ingested_total`: the events recorded (not repeats, not refusals, not
    those still queued: a queued event counts when it is applied), by source."""
    recorded: dict[str, list[str]] = {}
    for arrival, result in zip(arrivals, results, strict=True):
        if isinstance(result, Ingested) and not result.duplicate:
            recorded.setdefault(arrival.source, []).append(arrival.event.type)
    known = known_event_types(runtime.catalog) if recorded else frozenset[str]()
    for source, types in recorded.items():
        metrics.count_events(source, types, known)
