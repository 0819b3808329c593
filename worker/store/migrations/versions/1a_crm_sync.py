"""CRM sync outbox (issue 6)

Revision ID: 1a_crm_sync
Revises: 0c879e5a3c94
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import worker.store.tables

revision: str = "1a_crm_sync"
down_revision: str | None = "0c879e5a3c94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), nullable=False, server_default="pending")
        )
        batch_op.add_column(
            sa.Column(
                "next_attempt_at", worker.store.tables.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column("lease_until", worker.store.tables.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("delivery_id", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.create_index(
            "ix_crm_outbox_pending",
            ["lead_id", "id"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch_op.create_index(
            "ix_crm_outbox_queue",
            ["id"],
            unique=False,
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("crm_state", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("crm_state")
    with op.batch_alter_table("crm_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_outbox_queue")
        batch_op.drop_index("ix_crm_outbox_pending")
        batch_op.drop_column("last_error")
        batch_op.drop_column("delivery_id")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("next_attempt_at")
        batch_op.drop_column("status")
