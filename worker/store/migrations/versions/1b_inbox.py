"""inbox poller state (issue 7)

Revision ID: 1b_inbox
Revises: 1a_crm_sync
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import worker.store.tables

revision: str = "1b_inbox"
down_revision: str | None = "1a_crm_sync"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_positions",
        sa.Column("mailbox", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("mailbox"),
    )
    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("matched_by", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("lead_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("step_run_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("received_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_inbox_messages_uid"),
    )
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_messages_lead_id"), ["lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbox_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_messages_lead_id"))
    op.drop_table("inbox_messages")
    op.drop_table("inbox_positions")
