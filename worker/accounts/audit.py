"""The audit log: who did what, when and why. Written in the caller's transaction, so an action
is recorded exactly when its change commits; shown on the lead and in the lead's export.

`actor` is `user:<name>` for a console user, `api` for a bearer token, `cli` for the command
line, `crm` for the CRM's commands.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from worker.store.tables import ActionRow

REASON_LENGTH = 2000


def record_action(
    session: Session,
    *,
    actor: str,
    action: str,
    reason: str | None,
    lead_id: str | None = None,
    target: str | None = None,
    details: dict[str, Any] | None = None,
    now: datetime,
) -> None:
    session.add(
        ActionRow(
            at=now,
            actor=actor[:80],
            action=action[:40],
            target=target[:200] if target is not None else None,
            reason=reason[:REASON_LENGTH] if reason else None,
            lead_id=lead_id,
            details=details,
        )
    )


def lead_actions(session: Session, lead_id: str, limit: int = 100) -> list[ActionRow]:
    """The actions on one lead, newest first."""
    rows = session.execute(
        select(ActionRow)
        .where(col(ActionRow.lead_id) == lead_id)
        .order_by(col(ActionRow.at).desc(), col(ActionRow.id).desc())
        .limit(limit)
    ).scalars()
    return list(rows)


def latest_action(session: Session, target: str) -> ActionRow | None:
    """The newest action on a target (`sends`, `sequence:<id>`)."""
    return session.execute(
        select(ActionRow)
        .where(col(ActionRow.target) == target)
        .order_by(col(ActionRow.at).desc(), col(ActionRow.id).desc())
        .limit(1)
    ).scalar_one_or_none()


def recent_actions(session: Session, limit: int = 20) -> list[ActionRow]:
    """The newest actions not on one lead (the switches, sequences), newest first."""
    rows = session.execute(
        select(ActionRow)
        .where(col(ActionRow.lead_id).is_(None))
        .order_by(col(ActionRow.at).desc(), col(ActionRow.id).desc())
        .limit(limit)
    ).scalars()
    return list(rows)


def as_json(row: ActionRow) -> dict[str, Any]:
    return {
        "at": row.at.isoformat(),
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "reason": row.reason,
        "lead_id": row.lead_id,
        "details": row.details,
    }
