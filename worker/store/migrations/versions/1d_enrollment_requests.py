"""manual enrollments kept under their Idempotency-Key (issue 17)

Revision ID: 1d_enrollment_requests
Revises: 1c_channels
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import worker.store.tables

revision: str = "1d_enrollment_requests"
down_revision: str | None = "1c_channels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrollment_requests",
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("lead_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("created_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("idempotency_key"),
    )
    with op.batch_alter_table("enrollment_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_enrollment_requests_lead_id"), ["lead_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("enrollment_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_requests_lead_id"))
    op.drop_table("enrollment_requests")
