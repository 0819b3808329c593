"""Reading the outcome counters (a SUM over a sequence's rows in a range of hours), the steps
waiting now (read live, through the partial index `ix_step_runs_waiting`), and the compaction
that folds each closed hour's delta rows into one row per key, so reads stay small. A sum is
the same before and after a compaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, select, text
from sqlmodel import Session, col

from worker.store.counter_rows import ENROLLMENT, WAITING, CounterRow
from worker.store.counters import hour_of
from worker.store.tables import StepRunRow, UTCDateTime

COMPACT_HOURS = 500
"""Hours one compaction folds at most (the next run takes the rest)."""


@dataclass(frozen=True)
class Count:
    step: str
    variant: int
    outcome: str
    reason: str
    count: int


def sums(
    session: Session,
    sequence_id: str,
    *,
    version: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[Count]:
    """The sequence's counts per step, variant, outcome and reason, over the hours that start
    in [start, end) (all hours when not given)."""
    statement = (
        select(
            col(CounterRow.step_id),
            col(CounterRow.variant),
            col(CounterRow.outcome),
            col(CounterRow.reason),
            func.sum(col(CounterRow.count)),
        )
        .where(col(CounterRow.sequence_id) == sequence_id)
        .group_by(
            col(CounterRow.step_id),
            col(CounterRow.variant),
            col(CounterRow.outcome),
            col(CounterRow.reason),
        )
    )
    if version is not None:
        statement = statement.where(col(CounterRow.version) == version)
    if start is not None:
        statement = statement.where(col(CounterRow.hour) >= start)
    if end is not None:
        statement = statement.where(col(CounterRow.hour) < end)
    rows = session.execute(statement).all()
    return [Count(str(s), int(v), str(o), str(r), int(n)) for s, v, o, r, n in rows if n]


def enrollments_by_sequence(session: Session) -> dict[str, dict[str, int]]:
    """Sequence → entered, completed, exited, converted, over all time."""
    rows = session.execute(
        select(
            col(CounterRow.sequence_id), col(CounterRow.outcome), func.sum(col(CounterRow.count))
        )
        .where(col(CounterRow.step_id) == ENROLLMENT)
        .group_by(col(CounterRow.sequence_id), col(CounterRow.outcome))
    ).all()
    found: dict[str, dict[str, int]] = {}
    for sequence_id, outcome, count in rows:
        found.setdefault(str(sequence_id), {})[str(outcome)] = int(count)
    return found


def waiting(
    session: Session, sequence_id: str, version: str | None = None
) -> list[tuple[str, int | None, str, int]]:
    """(step, variant, status, count) of the sequence's runs waiting, in flight or in doubt
    now."""
    statement = (
        select(
            col(StepRunRow.step_id),
            col(StepRunRow.variant),
            col(StepRunRow.status),
            func.count(),
        )
        .where(
            col(StepRunRow.sequence_id) == sequence_id,
            col(StepRunRow.status).in_(WAITING),
            col(StepRunRow.enrollment_id).is_not(None),
        )
        .group_by(col(StepRunRow.step_id), col(StepRunRow.variant), col(StepRunRow.status))
    )
    if version is not None:
        statement = statement.where(col(StepRunRow.version) == version)
    rows = session.execute(statement).all()
    return [(str(s), v, str(st), int(n)) for s, v, st, n in rows]


def known(session: Session, sequence_id: str) -> bool:
    """The counters hold something of this sequence (its file may be gone)."""
    found = session.execute(
        select(col(CounterRow.id)).where(col(CounterRow.sequence_id) == sequence_id).limit(1)
    ).first()
    return found is not None


# -- compaction -------------------------------------------------------------------------------

KEY = "sequence_id, version, step_id, variant, hour, outcome, reason"
FOLD_POSTGRES = f"""
WITH gone AS (
    DELETE FROM outcome_counters WHERE hour IN :hours
    RETURNING {KEY}, count
)
INSERT INTO outcome_counters ({KEY}, count, compacted)
SELECT {KEY}, sum(count), true FROM gone GROUP BY {KEY} HAVING sum(count) <> 0
"""
FOLD_SQLITE = f"""
INSERT INTO outcome_counters ({KEY}, count, compacted)
SELECT {KEY}, sum(count), 1 FROM outcome_counters WHERE hour IN :hours
GROUP BY {KEY} HAVING sum(count) <> 0
"""
DROP_SQLITE = "DELETE FROM outcome_counters WHERE hour IN :hours AND id <= :last"


def compact(session: Session, now: datetime) -> int:
    """Fold the delta rows of closed hours (before this hour) that have rows not folded yet
    into one row per key. On PostgreSQL one statement deletes and re-inserts, so a delta
    committed meanwhile is either folded or left for the next run, never lost; SQLite runs one
    writer at a time. Returns how many hours were folded."""
    hours: Sequence[datetime] = (
        session.execute(
            select(col(CounterRow.hour))
            .where(text("NOT compacted"), col(CounterRow.hour) < hour_of(now))
            .group_by(col(CounterRow.hour))
            .order_by(col(CounterRow.hour))
            .limit(COMPACT_HOURS)
        )
        .scalars()
        .all()
    )
    if not hours:
        return 0
    chosen = bindparam("hours", value=list(hours), expanding=True, type_=UTCDateTime())
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(FOLD_POSTGRES).bindparams(chosen))
        return len(hours)
    last = session.execute(select(func.max(col(CounterRow.id)))).scalar_one()
    session.execute(text(FOLD_SQLITE).bindparams(chosen))
    session.execute(text(DROP_SQLITE).bindparams(chosen, last=last))
    return len(hours)
