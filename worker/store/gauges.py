"""What `/metrics` reads from the database at each scrape: the work waiting now, never the
history. Every query runs on a partial index whose rows leave it when the work is done (due
steps, steps in doubt, waiting steps, unpushed CRM changes) or on a table of a few rows
(switches, heartbeats), so a scrape costs the same at ten thousand events as at ten million.
`bench/metrics.py` measures it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Index, text
from sqlmodel import Session

from worker.store.heartbeats import heartbeats
from worker.store.holds import provider_holds
from worker.store.intake import failed_count, queued_count
from worker.store.polls import last_polls
from worker.store.steps import db_time
from worker.store.tables import StepRunRow

WAITING_WHERE = "status = 'pending' AND (hold IS NOT NULL OR reason IS NOT NULL)"
WAITING_INDEX = Index(
    "ix_step_runs_held",
    StepRunRow.__table__.c.hold,  # type: ignore[attr-defined]
    StepRunRow.__table__.c.reason,  # type: ignore[attr-defined]
    postgresql_where=text(WAITING_WHERE),
    sqlite_where=text(WAITING_WHERE),
)
"""Declared here, beside its only query (tables.py is full); migration 1j_heartbeats."""

WAITING = (
    "SELECT COALESCE(hold, CASE "
    "WHEN reason LIKE 'retry: %refused our credentials%' THEN 'provider_held' "
    "WHEN reason LIKE 'retry:%' THEN 'retry' ELSE reason END) AS why, count(*) "
    f"FROM step_runs WHERE {WAITING_WHERE} GROUP BY why"
)
"""Pending steps waiting for a reason (ix_step_runs_held): an operator's hold (paused,
sends_paused …), a cap or a window, a retry, a provider holding off after refusing our
credentials (`provider_held`)."""


@dataclass
class Gauges:
    due: dict[str | None, int] = field(default_factory=dict)
    """Channel → pending steps due now."""
    oldest_due: datetime | None = None
    unknown: int = 0
    held: dict[str, int] = field(default_factory=dict)
    crm_backlog: int = 0
    crm_oldest: datetime | None = None
    last_poll: datetime | None = None
    provider_holds: dict[str, datetime] = field(default_factory=dict)
    heartbeats: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    intake_pending: int = 0
    """Events answered 202 `queued` and not applied yet."""
    intake_failed: int = 0
    """Queued events the database refused when applied (kept with their error)."""


def read_gauges(session: Session, now: datetime) -> Gauges:
    at = {"now": db_time(session, now)}
    if session.get_bind().dialect.name == "postgresql":
        # each query reads a few index entries; PostgreSQL's estimate for a partial index on
        # a large table can be far off and start parallel workers, which costs more than the
        # whole read (4.5 ms at a million step runs, bench/metrics.py)
        session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    due_rows = session.execute(
        text(
            "SELECT channel, count(*), min(due_at) FROM step_runs "
            "WHERE status = 'pending' AND due_at IS NOT NULL AND due_at <= :now GROUP BY channel"
        ),
        at,
    ).all()
    found = Gauges(due={channel: int(count) for channel, count, _ in due_rows})
    oldest = [at for at in (_aware(row[2]) for row in due_rows) if at is not None]
    found.oldest_due = min(oldest, default=None)
    found.unknown = int(
        session.execute(text("SELECT count(*) FROM step_runs WHERE status = 'unknown'")).scalar()
        or 0
    )
    found.held = {str(why): int(count) for why, count in session.execute(text(WAITING)).all()}
    found.crm_backlog = int(
        session.execute(text("SELECT count(*) FROM crm_outbox WHERE status = 'pending'")).scalar()
        or 0
    )
    found.crm_oldest = _aware(
        session.execute(
            text("SELECT created_at FROM crm_outbox WHERE status = 'pending' ORDER BY id LIMIT 1")
        ).scalar()
    )
    polls = last_polls(session)
    found.last_poll = max(polls.values()) if polls else None
    found.provider_holds = provider_holds(session)
    found.heartbeats = heartbeats(session, now)
    found.intake_pending = queued_count(session)
    found.intake_failed = failed_count(session)
    return found


def _aware(value: object) -> datetime | None:
    """Raw SQL skips the column type: SQLite gives text, PostgreSQL an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
