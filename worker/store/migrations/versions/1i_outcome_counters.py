"""outcome counters: delta rows per sequence, version, step, variant and UTC hour, the marks
that count an outcome once, and an index for the steps waiting now (issue 16)

Revision ID: 1i_outcome_counters
Revises: 1h_event_intake
Create Date: 2026-12-05 06:00:00

After upgrading, `nurture stats backfill` fills the counters from the history already stored
(docs/stats.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import worker.store.tables

revision: str = "1i_outcome_counters"
down_revision: str | None = "1h_event_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = sa.text(
    "status IN ('pending', 'queued', 'claimed', 'sending', 'unknown') AND enrollment_id IS NOT NULL"
)


def upgrade() -> None:
    op.create_table(
        "outcome_counters",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("sequence_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("step_id", sa.String(length=200), nullable=False),
        sa.Column("variant", sa.Integer(), nullable=False),
        sa.Column("hour", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("compacted", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_outcome_counters_read", "outcome_counters", ["sequence_id", "hour"])
    op.create_index(
        "ix_outcome_counters_loose",
        "outcome_counters",
        ["hour"],
        postgresql_where=sa.text("NOT compacted"),
        sqlite_where=sa.text("NOT compacted"),
    )
    op.create_table(
        "outcome_marks",
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("ref", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("outcome", "ref"),
    )
    op.create_index(
        "ix_step_runs_waiting",
        "step_runs",
        ["sequence_id", "step_id", "variant"],
        postgresql_where=WAITING,
        sqlite_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_step_runs_waiting", table_name="step_runs")
    op.drop_table("outcome_marks")
    op.drop_table("outcome_counters")
