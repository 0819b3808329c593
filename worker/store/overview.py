"""What an operator looks at (the console's operations page): due work and how late it is,
steps by status, the steps left `unknown`, the CRM backlog, enrollments per sequence."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from worker.store.tables import CrmChangeRow, EnrollmentRow, StepRunRow


@dataclass(frozen=True)
class UnknownStep:
    step_run_id: str
    lead_id: str
    sequence_id: str
    step_id: str
    channel: str | None
    claimed_at: datetime | None


@dataclass(frozen=True)
class CrmBacklog:
    pending: int
    """Changes not pushed yet."""
    failed: int
    """Changes the CRM refused (recorded, not retried)."""
    oldest_pending_at: datetime | None
    last_error: str | None
    """The error of the newest change that is still waiting or failed."""
    next_attempt_at: datetime | None
    """When the change with that error is tried again (None when it failed for good)."""


def due_now(session: Session, now: datetime) -> tuple[int, datetime | None]:
    """How many pending steps are due, and the due time of the longest-waiting one (the
    partial due index answers both)."""
    count, oldest = session.execute(
        select(func.count(), func.min(col(StepRunRow.due_at))).where(
            col(StepRunRow.status) == "pending",
            col(StepRunRow.due_at).is_not(None),
            col(StepRunRow.due_at) <= now,
        )
    ).one()
    return int(count), oldest


def steps_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(col(StepRunRow.status), func.count()).group_by(col(StepRunRow.status))
    ).all()
    return {str(status): int(count) for status, count in rows}


def unknown_steps(session: Session, limit: int = 50) -> list[UnknownStep]:
    """The latest steps left `unknown` (handed to a provider, never recorded), newest first."""
    rows = session.execute(
        select(
            col(StepRunRow.id),
            col(StepRunRow.lead_id),
            col(StepRunRow.sequence_id),
            col(StepRunRow.step_id),
            col(StepRunRow.channel),
            col(StepRunRow.claimed_at),
        )
        .where(col(StepRunRow.status) == "unknown")
        .order_by(col(StepRunRow.claimed_at).desc())
        .limit(limit)
    ).all()
    return [UnknownStep(*row) for row in rows]


def crm_backlog(session: Session) -> CrmBacklog:
    """Changes not yet pushed to the CRM, those it refused, and the latest error."""
    counts = dict(
        session.execute(
            select(col(CrmChangeRow.status), func.count())
            .where(col(CrmChangeRow.status).in_(("pending", "failed")))
            .group_by(col(CrmChangeRow.status))
        ).all()
    )
    oldest = session.execute(
        select(col(CrmChangeRow.created_at))
        .where(col(CrmChangeRow.status) == "pending")
        .order_by(col(CrmChangeRow.id))
        .limit(1)
    ).scalar_one_or_none()
    latest = session.execute(
        select(
            col(CrmChangeRow.last_error),
            col(CrmChangeRow.status),
            col(CrmChangeRow.next_attempt_at),
        )
        .where(
            col(CrmChangeRow.status).in_(("pending", "failed")),
            col(CrmChangeRow.last_error).is_not(None),
        )
        .order_by(col(CrmChangeRow.id).desc())
        .limit(1)
    ).first()
    return CrmBacklog(
        pending=int(counts.get("pending", 0)),
        failed=int(counts.get("failed", 0)),
        oldest_pending_at=oldest,
        last_error=latest[0] if latest else None,
        next_attempt_at=latest[2] if latest and latest[1] == "pending" else None,
    )


def active_enrollments(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(col(EnrollmentRow.sequence_id), func.count())
        .where(col(EnrollmentRow.status) == "active")
        .group_by(col(EnrollmentRow.sequence_id))
    ).all()
    return {str(sequence): int(count) for sequence, count in rows}
