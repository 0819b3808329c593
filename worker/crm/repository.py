"""Every query on the CRM outbox (`crm_outbox`): write a change with the change itself, claim
the next changes of a batch of contacts, record how their push went.

Order per contact is the outbox id: every change to a lead is written under the lead's lock, so
a lead's ids grow in commit order. A contact is claimable only when its oldest pending change
is due and not leased, so nothing newer ever overtakes a change still waiting for a retry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlmodel import Session

from worker.store.deferred import deferred
from worker.store.steps import db_time
from worker.store.switches import write_switch
from worker.store.tables import CrmChangeRow, SwitchRow

HOLD = "crm:hold_until"
"""A switches row: when the whole CRM failed, nothing is tried before this time."""


@dataclass(frozen=True)
class Claimed:
    """One change leased to a push."""

    id: int
    lead_id: str
    kind: str
    payload: dict[str, Any]
    delivery_id: str
    attempts: int


def add_change(
    session: Session, lead_id: str, kind: str, payload: dict[str, Any], now: datetime
) -> None:
    values: dict[str, Any] = {
        "lead_id": lead_id,
        "kind": kind,
        "payload": payload,
        "created_at": now,
    }
    writes = deferred(
        session
    )  # a batch of events (worker.ingest.service.ingest_batch) writes in bulk
    if writes is not None:
        writes.insert(CrmChangeRow, values)
        return
    session.add(CrmChangeRow(**values))


def claim(
    session: Session, now: datetime, contacts: int, per_contact: int, lease: timedelta
) -> list[Claimed]:
    """Lease the next changes of up to `contacts` contacts, oldest first, in id order.

    A contact's changes go out as one delivery: a retried delivery is exactly the changes of
    its first attempt (same `delivery_id`); new changes wait for the next one."""
    dialect = session.get_bind().dialect.name
    lock = "FOR UPDATE OF o SKIP LOCKED" if dialect == "postgresql" else ""
    at = db_time(session, now)
    heads = session.execute(
        text(
            f"""
            SELECT o.lead_id FROM crm_outbox o
            WHERE o.status = 'pending'
              AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= :now)
              AND (o.lease_until IS NULL OR o.lease_until <= :now)
              AND NOT EXISTS (
                  SELECT 1 FROM crm_outbox p
                  WHERE p.lead_id = o.lead_id AND p.status = 'pending' AND p.id < o.id
              )
            ORDER BY o.id
            LIMIT :contacts
            {lock}
            """
        ),
        {"now": at, "contacts": contacts},
    ).all()
    lead_ids = [row[0] for row in heads]
    if not lead_ids:
        return []
    rows = session.execute(
        text(
            "SELECT id, lead_id, kind, payload, delivery_id, attempts FROM crm_outbox "
            "WHERE status = 'pending' AND lead_id IN :leads ORDER BY id"
        ).bindparams(bindparam("leads", expanding=True)),
        {"leads": lead_ids},
    ).all()
    by_lead: dict[str, list[Any]] = {}
    for row in rows:
        by_lead.setdefault(row[1], []).append(row)
    claimed: list[Claimed] = []
    for lead_id in lead_ids:
        claimed.extend(_delivery(by_lead.get(lead_id, []), per_contact))
    _lease(session, claimed, now + lease)
    return sorted(claimed, key=lambda c: c.id)


def _delivery(rows: list[Any], per_contact: int) -> list[Claimed]:
    """The changes of a contact's next delivery: the pinned ones of a retry, else new ones."""
    if not rows:
        return []
    pinned = rows[0][4]
    if pinned is not None:
        chosen = [r for r in rows if r[4] == pinned]
    else:
        chosen = []
        for row in rows:
            if row[4] is not None or len(chosen) >= per_contact:
                break
            chosen.append(row)
        pinned = f"crm-{chosen[0][0]}-{chosen[-1][0]}"
    return [Claimed(r[0], r[1], r[2], _json(r[3]), pinned, int(r[5] or 0)) for r in chosen]


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # raw SQL on SQLite hands JSON back as text
        loaded: dict[str, Any] = json.loads(value)
        return loaded
    return dict(value)


def _lease(session: Session, claimed: list[Claimed], until: datetime) -> None:
    if not claimed:
        return
    session.execute(
        text("UPDATE crm_outbox SET lease_until = :until, delivery_id = :delivery WHERE id = :id"),
        [
            {"until": db_time(session, until), "delivery": c.delivery_id, "id": c.id}
            for c in claimed
        ],
    )


def mark_pushed(session: Session, ids: Iterable[int], now: datetime) -> None:
    _update(
        session,
        ids,
        "status = 'pushed', pushed_at = :now, lease_until = NULL, attempts = attempts + 1, "
        "last_error = NULL",
        {"now": db_time(session, now)},
    )


def mark_retry(session: Session, ids: Iterable[int], error: str, next_attempt_at: datetime) -> None:
    """A temporary failure: the same delivery goes again at `next_attempt_at`."""
    _update(
        session,
        ids,
        "lease_until = NULL, attempts = attempts + 1, last_error = :error, next_attempt_at = :next",
        {"error": error[:2000], "next": db_time(session, next_attempt_at)},
    )


def mark_failed(session: Session, ids: Iterable[int], error: str, now: datetime) -> None:
    """The CRM refused it (a 4xx): recorded, never retried; the contact's later changes go on."""
    _update(
        session,
        ids,
        "status = 'failed', pushed_at = :now, lease_until = NULL, attempts = attempts + 1, "
        "last_error = :error",
        {"error": error[:2000], "now": db_time(session, now)},
    )


def _update(session: Session, ids: Iterable[int], assignments: str, values: dict[str, Any]) -> None:
    found = list(ids)
    if not found:
        return
    session.execute(
        text(f"UPDATE crm_outbox SET {assignments} WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        ),
        {**values, "ids": found},
    )


def hold_until(session: Session) -> datetime | None:
    row = session.get(SwitchRow, HOLD)
    return datetime.fromisoformat(row.value) if row is not None else None


def hold(session: Session, until: datetime, now: datetime) -> None:
    write_switch(session, HOLD, until.isoformat(), now, "crm.push")


def prune_pushed(session: Session, before: datetime, limit: int) -> int:
    """Delete up to `limit` changes pushed before `before`, oldest first; how many. Pending
    changes (waiting, leased or retrying) and refused ones stay."""
    ids = [
        row[0]
        for row in session.execute(
            text(
                "SELECT id FROM crm_outbox WHERE status = 'pushed' AND pushed_at < :before "
                "ORDER BY id LIMIT :limit"
            ),
            {"before": db_time(session, before), "limit": limit},
        )
    ]
    if ids:
        session.execute(
            text("DELETE FROM crm_outbox WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
    return len(ids)
