"""The outcome counters' tables: small delta rows per sequence, version, step, variant, UTC hour,
outcome and reason (added up when read, folded per closed hour by the compaction), the marks
that make an outcome count once per message or enrollment, and the index that reads the steps
waiting now. worker/store/counters.py writes and reads them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, Integer, text
from sqlmodel import Field, SQLModel

from worker.store.tables import StepRunRow, UTCDateTime

NO_VARIANT = -1
"""`variant` of a step without variants (a key column is never NULL, so keys compare)."""
ENROLLMENT = ""
"""`step` of the rows that count enrollments: entered, completed, exited, converted."""

COUNTER_ID = BigInteger().with_variant(Integer(), "sqlite")
"""An id that grows: BIGSERIAL on PostgreSQL, SQLite's rowid."""


class CounterRow(SQLModel, table=True):
    """`count` outcomes (may be negative: a bounce takes a delivery back) in the UTC hour
    starting at `hour`. Many rows per key are normal; a read sums them."""

    __tablename__ = "outcome_counters"
    __table_args__ = (
        Index("ix_outcome_counters_read", "sequence_id", "hour"),
        # what the compaction looks for: hours with rows not folded yet
        Index(
            "ix_outcome_counters_loose",
            "hour",
            postgresql_where=text("NOT compacted"),
            sqlite_where=text("NOT compacted"),
        ),
    )

    id: int | None = Field(default=None, sa_column=Column(COUNTER_ID, primary_key=True))
    sequence_id: str = Field(max_length=100)
    version: str = Field(default="", max_length=40)
    step_id: str = Field(default=ENROLLMENT, max_length=200)
    variant: int = NO_VARIANT
    hour: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    outcome: str = Field(max_length=20)
    reason: str = Field(default="", max_length=200)
    count: int = Field(sa_column=Column(BigInteger, nullable=False))
    compacted: bool = False


class CounterMarkRow(SQLModel, table=True):
    """An outcome counted once per thing: (`opened`, step run id), (`converted`, enrollment
    id) … Inserted on its key; a second open of the same message finds it and counts nothing."""

    __tablename__ = "outcome_marks"

    outcome: str = Field(primary_key=True, max_length=20)
    ref: str = Field(primary_key=True, max_length=32)


WAITING = ("pending", "queued", "claimed", "sending", "unknown")
"""Step runs read live (not counted): waiting, in flight, or in doubt."""

WAITING_INDEX = Index(
    "ix_step_runs_waiting",
    StepRunRow.__table__.c.sequence_id,  # type: ignore[attr-defined]
    StepRunRow.__table__.c.step_id,  # type: ignore[attr-defined]
    StepRunRow.__table__.c.variant,  # type: ignore[attr-defined]
    postgresql_where=text(
        "status IN ('pending', 'queued', 'claimed', 'sending', 'unknown') "
        "AND enrollment_id IS NOT NULL"
    ),
    sqlite_where=text(
        "status IN ('pending', 'queued', 'claimed', 'sending', 'unknown') "
        "AND enrollment_id IS NOT NULL"
    ),
)
"""What the funnel's "waiting now" reads: only the live rows, per sequence and step."""
