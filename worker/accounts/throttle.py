"""The slow-down after failed sign-ins: five failures for one name or from one address within
15 minutes refuse further attempts for a minute, and each failure after that doubles the wait
(up to an hour). Counted in the database, so every API process agrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine as Database
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from worker.accounts import repository as store
from worker.store.db import transaction
from worker.store.tables import SignInFailureRow

ALLOWED_FAILURES = 5
WINDOW = timedelta(minutes=15)
FIRST_WAIT = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)
KEY_LENGTH = 120


@dataclass(frozen=True)
class Locked:
    until: datetime

    def message(self, now: datetime) -> str:
        minutes = max(1, math.ceil((self.until - now).total_seconds() / 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"Too many failed sign-ins; try again in {minutes} {unit}"


def keys(name: str, address: str | None) -> list[str]:
    """What failures are counted under: the name typed, and the client's address."""
    found = [f"name:{name.strip().lower()}"[:KEY_LENGTH]]
    if address:
        found.append(f"ip:{address}"[:KEY_LENGTH])
    return found


def locked(database: Database, name: str, address: str | None, now: datetime) -> Locked | None:
    """The latest lock on the name or the address still running at `now`, if any."""
    with transaction(database) as session:
        ends = [
            row.locked_until
            for row in store.failures(session, keys(name, address))
            if row.locked_until is not None and row.locked_until > now
        ]
    return Locked(max(ends)) if ends else None


def record_failure(database: Database, name: str, address: str | None, now: datetime) -> None:
    """Count a failed sign-in against the name and the address."""
    for attempt in range(2):
        try:
            with transaction(database) as session:
                for key in keys(name, address):
                    _count(session, key, now)
            return
        except IntegrityError:  # a concurrent first failure made the row: count on it
            if attempt:
                raise


def record_success(database: Database, name: str) -> None:
    """A right password clears the name's count (not the address's: one good account must not
    wipe out the failures on others from the same place)."""
    with transaction(database) as session:
        store.forget_failures(session, keys(name, None)[0])


def _count(session: Session, key: str, now: datetime) -> None:
    row = store.failure(session, key)
    if row is None or _spell_over(row, now):
        row = row or SignInFailureRow(key=key, first_at=now)
        row.count, row.first_at, row.locked_until = 0, now, None
    row.count += 1
    if row.count >= ALLOWED_FAILURES:
        wait = FIRST_WAIT * 2 ** min(row.count - ALLOWED_FAILURES, 12)
        row.locked_until = now + min(wait, LONGEST_WAIT)
    session.add(row)
    session.flush()


def _spell_over(row: SignInFailureRow, now: datetime) -> bool:
    """A spell of failures ends after 15 quiet minutes: since its first failure while it
    never reached a lock, else since its lock ran out."""
    since = row.locked_until or row.first_at
    return now - since > WINDOW
