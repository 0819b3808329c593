"""Heartbeats: each `nurture worker` and `nurture beat` process writes its row every
HEARTBEAT_SECONDS (worker/runtime/heartbeat.py); `/metrics` reads the newest per role
(`nurture_heartbeat_timestamp_seconds`) and how many are fresh (`nurture_processes_alive`).
Rows of processes gone for a day are dropped by the writers, so the table stays a handful of
rows however long the installation runs."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Index, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, col

from worker.store.tables import _time

ROLES = ("worker", "beat")
ALIVE = timedelta(seconds=60)
"""A process whose heartbeat is younger than this counts as alive."""
FORGET = timedelta(days=1)
"""Rows older than this are dropped at the next heartbeat of any process."""


class HeartbeatRow(SQLModel, table=True):
    """One running process: `worker:host:pid` or `beat:host:pid`, and when it last beat."""

    __tablename__ = "heartbeats"
    __table_args__ = (Index("ix_heartbeats_role_at", "role", "beat_at"),)

    process: str = Field(primary_key=True, max_length=200)
    role: str = Field(max_length=20)
    host: str = Field(max_length=160)
    pid: int
    started_at: datetime = _time(nullable=False)
    beat_at: datetime = _time(nullable=False)


def write_heartbeat(
    session: Session, role: str, host: str, pid: int, started_at: datetime, now: datetime
) -> None:
    """Upsert this process's row (and forget processes silent for a day)."""
    values = {
        "process": f"{role}:{host}:{pid}"[:200],
        "role": role,
        "host": host[:160],
        "pid": pid,
        "started_at": started_at,
        "beat_at": now,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(HeartbeatRow).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["process"], set_={"beat_at": statement.excluded.beat_at}
        )
    )
    session.execute(delete(HeartbeatRow).where(col(HeartbeatRow.beat_at) < now - FORGET))


def heartbeats(session: Session, now: datetime) -> dict[str, tuple[datetime, int]]:
    """Role → (its newest heartbeat, processes that beat within ALIVE); roles never seen are
    absent."""
    alive = func.sum(case((col(HeartbeatRow.beat_at) >= now - ALIVE, 1), else_=0))
    rows = session.execute(
        select(col(HeartbeatRow.role), func.max(col(HeartbeatRow.beat_at)), alive).group_by(
            col(HeartbeatRow.role)
        )
    ).all()
    return {str(role): (newest, int(count or 0)) for role, newest, count in rows}
