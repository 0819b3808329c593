"""When the reply mailbox was last read: one `polled:<mailbox>` row in `switches` per mailbox,
written at the end of every poll (the operations page shows it; a stale one means the
watcher is down)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from worker.store.tables import SwitchRow

PREFIX = "polled:"
NAME_LENGTH = 140


def record_poll(session: Session, mailbox: str, now: datetime) -> None:
    """Upsert the mailbox's row: two pollers finishing at once must not collide on it."""
    name = (PREFIX + mailbox)[:NAME_LENGTH]
    values = {"name": name, "value": now.isoformat(), "changed_at": now, "changed_by": "inbox"}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(SwitchRow).values(values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"value": statement.excluded.value, "changed_at": statement.excluded.changed_at},
        )
    )


def last_polls(session: Session) -> dict[str, datetime]:
    """Each mailbox with when its latest poll ended."""
    rows = session.execute(
        select(SwitchRow).where(col(SwitchRow.name).startswith(PREFIX))
    ).scalars()
    return {row.name.removeprefix(PREFIX): row.changed_at for row in rows}
