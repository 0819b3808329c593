"""Pushing the CRM outbox (the `crm.push` task): batched, in order per contact. A temporary
failure (429, 5xx, no connection) holds the contact's changes for a retry with backoff, in the
database; a 4xx is recorded and not retried. A refused token (401/403) holds the whole CRM for
15 minutes (then one probe) and is logged at ERROR and shown as `nurture_provider_held`. An
outage of any length loses nothing and reorders nothing. What goes into the outbox is
`worker/crm/changes.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine as Database

from integrations.ports import (
    CredentialsRefused,
    Crm,
    PermanentError,
    PushResult,
    RateLimited,
    TemporaryError,
)
from worker.crm import repository as store
from worker.kit import metrics
from worker.kit.backoff import backoff
from worker.runtime.calls import provider_call
from worker.store.db import transaction
from worker.store.holds import hold_provider

if TYPE_CHECKING:
    pass

log = logging.getLogger("nurture")

BATCH_CONTACTS = 100
"""Contacts per push: HubSpot's batch upsert takes up to 100 inputs."""
PER_CONTACT = 500
LEASE = timedelta(minutes=2)
FIRST_RETRY = 5.0
LONGEST_RETRY = 300.0


@dataclass
class PushReport:
    """What one run of `push_pending` did, counted in changes."""

    pushed: int = 0
    failed: int = 0
    deferred: int = 0
    contacts: set[str] = field(default_factory=set)
    held_until: datetime | None = None
    """The CRM failed as a whole: nothing is tried before this."""
    refused_by: str | None = None
    """The CRM refused our credentials (a 401 or 403): the provider's name."""


def push_pending(
    database: Database,
    crm: Crm,
    now: datetime,
    *,
    rounds: int = 10,
    contacts: int = BATCH_CONTACTS,
    pace: Callable[[], object] | None = None,
    provider: str = "other",
) -> PushReport:
    """Claim the next changes of up to `contacts` contacts and push them, for up to `rounds`
    batches. `now` is the clock for claims and retry times (tests pass a simulated one);
    `pace` waits for the policy's `crm` rate before each batch (RateLimited: stop for now);
    `provider` names the backend in the metrics."""
    report = PushReport()
    for _ in range(rounds):
        if pace is not None:
            try:
                waited = pace()
            except RateLimited:
                metrics.count_throttled(provider)
                break  # the account is booked: the next tick goes on
            if isinstance(waited, float) and waited > 0:
                metrics.count_throttled(provider)
        with transaction(database) as session:
            held = store.hold_until(session)
            if held is not None and now < held:
                report.held_until = held
                break
            claimed = store.claim(session, now, contacts, PER_CONTACT, LEASE)
        if not claimed:
            break
        deferred_before = report.deferred
        _push(database, crm, claimed, now, report, provider)
        if report.deferred > deferred_before:
            break  # the CRM is struggling: the rest waits for the retry
    return report


def as_json(change: store.Claimed) -> dict[str, Any]:
    """A change as every CRM backend sees it (the webhook body, the outbox's JSON lines)."""
    return {"id": change.id, "type": change.kind, "delivery": change.delivery_id, **change.payload}


def _push(
    database: Database,
    crm: Crm,
    claimed: list[store.Claimed],
    now: datetime,
    report: PushReport,
    provider: str = "other",
) -> None:
    leads = list(dict.fromkeys(c.lead_id for c in claimed))
    refused: str | None = None
    try:
        with provider_call(provider):
            result = crm.push([as_json(c) for c in claimed])
    except TemporaryError as exc:
        refused = exc.provider if isinstance(exc, CredentialsRefused) else None
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        result = PushResult(deferred=dict.fromkeys(leads, _error(exc)), retry_after=retry_after)
    except PermanentError as exc:
        if len(leads) > 1:
            # one contact's bad value fails a whole batch: find it, and let the others through
            for lead_id in leads:
                alone = [c for c in claimed if c.lead_id == lead_id]
                _push(database, crm, alone, now, report, provider)
            return
        result = PushResult(rejected={leads[0]: _error(exc)})
    _record(database, claimed, result, now, report, refused)


def _record(
    database: Database,
    claimed: list[store.Claimed],
    result: PushResult,
    now: datetime,
    report: PushReport,
    refused: str | None = None,
) -> None:
    """`refused`: the CRM (by name) refused our credentials; it is held with the rest."""
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
        if outage and refused is not None:
            hold_provider(session, refused, now + together, now)
            report.refused_by = refused
            log.error("the CRM (%s) refused our credentials: nothing is pushed until %s, then "
                      "one probe; %d change(s) wait, none is lost. Fix the token (HubSpot: "
                      "NURTURE_HUBSPOT_TOKEN)", refused, (now + together).isoformat(),
                      len(claimed))  # fmt: skip
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
