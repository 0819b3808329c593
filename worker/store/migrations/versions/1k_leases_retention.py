"""several beats and retention (issue 16): the beat lease, the last publication of long
duties, the idempotency keys of pruned events, and an index to prune events by arrival

Revision ID: 1k_leases_retention
Revises: 1j_heartbeats
Create Date: 2026-12-05 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import worker.store.tables

revision: str = "1k_leases_retention"
down_revision: str | None = "1j_heartbeats"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("expires_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "beat_entries",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("last_run_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # keys move here only when their event is pruned: nothing to backfill, and ingest writes
    # no second row per event
    op.create_table(
        "event_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("lead_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", worker.store.tables.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # events arrive, and their keys move, in time order: a BRIN index finds the old ones
        # in a few pages of index and costs a write next to nothing (SQLite: a B-tree for the
        # keys; the events are scanned in insertion order)
        op.create_index(
            "ix_events_received_brin", "events", ["received_at"], postgresql_using="brin"
        )
        op.create_index(
            "ix_event_keys_created_at", "event_keys", ["created_at"], postgresql_using="brin"
        )
    else:
        op.create_index("ix_event_keys_created_at", "event_keys", ["created_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_events_received_brin", table_name="events")
    op.drop_index("ix_event_keys_created_at", table_name="event_keys")
    op.drop_table("event_keys")
    op.drop_table("beat_entries")
    op.drop_table("leases")
