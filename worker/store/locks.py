"""Lock leads for a transaction: every change to a lead is serialized behind its row lock."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col

from worker.store.tables import LeadRow


def lock_lead(session: Session, lead_id: str) -> LeadRow | None:
    """The lead row, locked for this transaction: every change to a lead is serialized."""
    statement = select(LeadRow).where(col(LeadRow.id) == lead_id).with_for_update()
    return session.execute(statement).scalar_one_or_none()


def lock_leads(session: Session, lead_ids: Iterable[str]) -> dict[str, LeadRow]:
    """Several leads locked at once, by id."""
    locked = lock_leads_where(session, col(LeadRow.id).in_(sorted(set(lead_ids))))
    return {row.id: row for row in locked}


def lock_leads_where(session: Session, condition: ColumnElement[bool]) -> list[LeadRow]:
    """The leads matching `condition`, locked in id order in one query: two batches over the
    same leads queue up behind each other instead of deadlocking."""
    statement = select(LeadRow).where(condition).order_by(col(LeadRow.id)).with_for_update()
    return list(session.execute(statement).scalars())
