"""Providers held after refusing our credentials (a 401 or 403): one `held:<provider>` row in
`switches` whose value is when the hold ends. Nothing calls a held provider before then; the
first call after it is the probe. `GET /metrics` shows them as `nurture_provider_held`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session, col

from worker.store.switches import write_switch
from worker.store.tables import SwitchRow

PREFIX = "held:"


def hold_provider(session: Session, provider: str, until: datetime, now: datetime) -> None:
    """Hold `provider` until `until` (a later refusal moves the end, an earlier one never
    shortens a longer hold)."""
    current = held_until(session, provider)
    if current is not None and current > until:
        return
    write_switch(session, PREFIX + provider, until.isoformat(), now, "credentials refused")


def held_until(session: Session, provider: str) -> datetime | None:
    row = session.get(SwitchRow, PREFIX + provider)
    return datetime.fromisoformat(row.value) if row is not None else None


def provider_holds(session: Session) -> dict[str, datetime]:
    """Every provider ever held, with when its latest hold ends (past ones included)."""
    rows = session.execute(
        select(SwitchRow).where(col(SwitchRow.name).startswith(PREFIX))
    ).scalars()
    return {row.name.removeprefix(PREFIX): datetime.fromisoformat(row.value) for row in rows}
