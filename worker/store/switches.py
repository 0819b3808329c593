"""Operator switches: the incident switch (`sends`) and per-sequence holds."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from worker.engine.checks import Switches
from worker.store.steps import release_holds
from worker.store.tables import SwitchRow


def read_switches(session: Session) -> Switches:
    rows = session.execute(select(SwitchRow)).scalars().all()
    paused = {
        r.name.removeprefix("sequence:")
        for r in rows
        if r.name.startswith("sequence:") and r.value == "paused"
    }
    sends = any(r.name == "sends" and r.value == "paused" for r in rows)
    return Switches(sends_paused=sends, paused_sequences=frozenset(paused))


def write_switch(session: Session, name: str, value: str, now: datetime, by: str | None) -> None:
    """Set a switch; turning one back to `running` makes the steps it held due at once."""
    row = session.get(SwitchRow, name) or SwitchRow(name=name, value=value, changed_at=now)
    row.value, row.changed_at, row.changed_by = value, now, by
    session.add(row)
    if value == "running":
        hold = "sends_paused" if name == "sends" else "sequence_paused"
        sequence = None if name == "sends" else name.removeprefix("sequence:")
        release_holds(session, hold, now, sequence)
