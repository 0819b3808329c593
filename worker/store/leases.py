"""Leases held in the database: one process at a time holds a name (the beat that publishes
the periodic duties), taken and renewed by compare-and-set; and when each long periodic duty
last went out, so a beat that takes over keeps its rhythm.

On PostgreSQL every comparison uses the server's clock (`clock_timestamp()`), so beats on hosts
whose clocks disagree still agree on when a lease ran out; SQLite (one host) uses the caller's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Column, String, select, text
from sqlmodel import Field, Session, SQLModel

from worker.store.steps import db_time
from worker.store.tables import UTCDateTime


class LeaseRow(SQLModel, table=True):
    __tablename__ = "leases"

    name: str = Field(primary_key=True, max_length=80)
    holder: str = Field(sa_column=Column(String(200), nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


class BeatEntryRow(SQLModel, table=True):
    """When a periodic duty with a long interval was last published (by whichever beat)."""

    __tablename__ = "beat_entries"

    name: str = Field(primary_key=True, max_length=80)
    last_run_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))


def take_lease(session: Session, name: str, holder: str, seconds: float, now: datetime) -> bool:
    """Take or renew the lease `name` for `seconds`: True when `holder` holds it now (it held
    it already, or the last holder's lease ran out). Two takers at once: one wins."""
    if session.get_bind().dialect.name == "postgresql":
        expires, expired = "clock_timestamp() + :seconds * interval '1 second'", "clock_timestamp()"
        values: dict[str, object] = {"seconds": seconds}
    else:
        expires, expired = ":expires", ":now"
        values = {
            "expires": db_time(session, now + timedelta(seconds=seconds)),
            "now": db_time(session, now),
        }
    statement = text(
        f"INSERT INTO leases (name, holder, expires_at) VALUES (:name, :holder, {expires}) "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "expires_at = excluded.expires_at "
        f"WHERE leases.holder = excluded.holder OR leases.expires_at <= {expired} "
        "RETURNING holder"
    )
    found = session.execute(statement, {"name": name, "holder": holder, **values}).first()
    return found is not None


def lease_holder(session: Session, name: str) -> tuple[str, datetime] | None:
    """Who holds (or last held) the lease, and until when."""
    row = session.get(LeaseRow, name)
    return None if row is None else (row.holder, row.expires_at)


def release_lease(session: Session, name: str, holder: str, now: datetime) -> None:
    """End `holder`'s lease at once (a beat that stops cleanly): another takes over at its
    next try instead of after the lease."""
    postgres = session.get_bind().dialect.name == "postgresql"
    session.execute(
        text(
            f"UPDATE leases SET expires_at = {'clock_timestamp()' if postgres else ':now'} "
            "WHERE name = :name AND holder = :holder"
        ),
        {"now": db_time(session, now), "name": name, "holder": holder},
    )


def last_runs(session: Session) -> dict[str, datetime]:
    rows = session.execute(select(BeatEntryRow)).scalars()
    return {row.name: row.last_run_at for row in rows}


def record_run(session: Session, name: str, at: datetime) -> None:
    row = session.get(BeatEntryRow, name) or BeatEntryRow(name=name, last_run_at=at)
    row.last_run_at = at
    session.add(row)
