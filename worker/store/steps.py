"""Every query on step runs: leasing due steps to send tasks, the claim and hand-over
compare-and-sets, releasing holds, sweeping up after lost tasks.

The dispatcher claims a bounded batch of due rows in due order (FOR UPDATE SKIP LOCKED on
PostgreSQL; one atomic UPDATE on SQLite, whose transactions begin IMMEDIATE) and marks them
`queued` with a lease. Only rows with a partial-index entry (`pending` with a due time) are
scanned, so work waiting in the future costs nothing. The sweeper puts leased work whose task
vanished back to `pending`, and marks `unknown` a send that was handed to a provider and never
recorded: that one is never resent by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, text
from sqlmodel import Session

LEASE = timedelta(seconds=60)
HANDED_OVER_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class Swept:
    requeued: int
    unknown: int


def claim_due(session: Session, now: datetime, limit: int, lease: timedelta = LEASE) -> list[str]:
    """Lease up to `limit` due steps, oldest due first; returns their ids."""
    dialect = session.get_bind().dialect.name
    lock = "FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    statement = text(
        f"""
        UPDATE step_runs SET status = 'queued', lease_until = :lease_until
        WHERE id IN (
            SELECT id FROM step_runs
            WHERE status = 'pending' AND due_at IS NOT NULL AND due_at <= :now
            ORDER BY due_at
            LIMIT :limit
            {lock}
        )
        RETURNING id, due_at
        """
    )
    rows = session.execute(
        statement, {"now": db_time(session, now), "lease_until": db_time(session, now + lease),
                    "limit": limit},
    ).all()  # fmt: skip
    return [row[0] for row in sorted(rows, key=lambda r: str(r[1]))]


def in_flight(session: Session) -> int:
    """Steps leased to tasks and not finished yet (the partial index on leases answers)."""
    found = session.execute(
        text("SELECT count(*) FROM step_runs WHERE status IN ('queued', 'claimed', 'sending')")
    ).scalar_one()
    return int(found)


def sweep(session: Session, now: datetime, unknown_after: timedelta = HANDED_OVER_TIMEOUT) -> Swept:
    """Leases that ran out go back to pending; hand-overs never recorded become `unknown`."""
    requeued = session.execute(
        text(
            "UPDATE step_runs SET status = 'pending', lease_until = NULL "
            "WHERE status IN ('queued', 'claimed') AND lease_until < :now"
        ),
        {"now": db_time(session, now)},
    )
    unknown = session.execute(
        text(
            "UPDATE step_runs SET status = 'unknown', reason = 'unknown', finished_at = :now, "
            "due_at = NULL WHERE status = 'sending' AND claimed_at < :cutoff"
        ),
        {"now": db_time(session, now), "cutoff": db_time(session, now - unknown_after)},
    )
    return Swept(_count(requeued), _count(unknown))


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def db_time(session: Session, at: datetime) -> datetime | str:
    """Raw SQL skips the column type: give SQLite the text SQLAlchemy stores (naive UTC with
    microseconds), so string comparison is time comparison."""
    if session.get_bind().dialect.name == "sqlite":
        return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return at


def leads_of(session: Session, step_run_ids: list[str]) -> dict[str, str]:
    """step run id → its lead's id, for the steps that exist."""
    statement = text("SELECT id, lead_id FROM step_runs WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    return {row[0]: row[1] for row in session.execute(statement, {"ids": step_run_ids})}


def mark_claimed(
    session: Session, step_run_ids: list[str], now: datetime, lease: timedelta
) -> set[str]:
    """queued|pending → claimed, by compare-and-set: the ids that moved (the rest were taken
    by something else first)."""
    if not step_run_ids:
        return set()
    statement = text(
        "UPDATE step_runs SET status = 'claimed', claimed_at = :now, "
        "lease_until = :lease, attempts = attempts + 1 "
        "WHERE id IN :ids AND status IN ('queued', 'pending') RETURNING id"
    ).bindparams(bindparam("ids", expanding=True))
    found = session.execute(
        statement,
        {"ids": step_run_ids, "now": db_time(session, now), "lease": db_time(session, now + lease)},
    )
    return {row[0] for row in found}


def mark_sending(session: Session, step_run_ids: list[str]) -> set[str]:
    """claimed → sending, committed before the provider is called: the ids that moved."""
    if not step_run_ids:
        return set()
    statement = text(
        "UPDATE step_runs SET status = 'sending' WHERE id IN :ids AND status = 'claimed' "
        "RETURNING id"
    ).bindparams(bindparam("ids", expanding=True))
    return {row[0] for row in session.execute(statement, {"ids": step_run_ids})}


def release_holds(session: Session, hold: str, now: datetime, sequence: str | None) -> int:
    """Steps held by an operator switch are due again at once."""
    condition = " AND sequence_id = :sequence" if sequence is not None else ""
    found = session.execute(
        text(
            "UPDATE step_runs SET due_at = :now WHERE status = 'pending' AND due_at IS NULL "
            f"AND hold = :hold{condition}"
        ),
        {"now": db_time(session, now), "hold": hold, "sequence": sequence},
    )
    return _count(found)
