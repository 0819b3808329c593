"""metrics: process heartbeats, and an index for the steps waiting for a reason (issue 16)

Revision ID: 1j_heartbeats
Revises: 1i_outcome_counters
Create Date: 2026-12-05 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import worker.store.tables

revision: str = "1j_heartbeats"
down_revision: str | None = "1i_outcome_counters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WAITING = "status = 'pending' AND (hold IS NOT NULL OR reason IS NOT NULL)"


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("process", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("beat_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("process"),
    )
    op.create_index("ix_heartbeats_role_at", "heartbeats", ["role", "beat_at"], unique=False)
    op.create_index(
        "ix_step_runs_held",
        "step_runs",
        ["hold", "reason"],
        unique=False,
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_step_runs_held", table_name="step_runs")
    op.drop_index("ix_heartbeats_role_at", table_name="heartbeats")
    op.drop_table("heartbeats")
