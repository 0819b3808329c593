"""the copy of each email as sent, and names the console's search finds by prefix (issue 13)

Revision ID: 1f_message_copy
Revises: 1e_unknown_index
Create Date: 2026-12-10 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1f_message_copy"
down_revision: str | None = "1e_unknown_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5_000
SEARCH_NAME = sa.String(410).with_variant(sa.String(410, collation="C"), "postgresql")
LEADS = sa.table(
    "leads",
    sa.column("id", sa.String()),
    sa.column("first_name", sa.String()),
    sa.column("last_name", sa.String()),
    sa.column("search_name", sa.String()),
    sa.column("search_last", sa.String()),
)


def upgrade() -> None:
    op.add_column("messages", sa.Column("sent_copy", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_messages_copy_kept",
        "messages",
        ["sent_at"],
        postgresql_where=sa.text("sent_copy IS NOT NULL"),
        sqlite_where=sa.text("sent_copy IS NOT NULL"),
    )
    op.add_column("leads", sa.Column("search_name", SEARCH_NAME, nullable=True))
    op.add_column("leads", sa.Column("search_last", SEARCH_NAME, nullable=True))
    _fill_search_names()
    op.create_index("ix_leads_search_name", "leads", ["search_name"])
    op.create_index("ix_leads_search_last", "leads", ["search_last"])


def _fill_search_names() -> None:
    """The leads already named, in batches by id (the same case-folding as new writes)."""
    from worker.store.leads import search_names

    connection = op.get_bind()
    after = ""
    while True:
        rows = connection.execute(
            sa.select(LEADS.c.id, LEADS.c.first_name, LEADS.c.last_name)
            .where(
                LEADS.c.id > after,
                sa.or_(LEADS.c.first_name.is_not(None), LEADS.c.last_name.is_not(None)),
            )
            .order_by(LEADS.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        values = []
        for lead_id, first, last in rows:
            whole, family = search_names(first, last)
            values.append({"lead_id": lead_id, "whole": whole, "family": family})
        connection.execute(
            LEADS.update()
            .where(LEADS.c.id == sa.bindparam("lead_id"))
            .values(search_name=sa.bindparam("whole"), search_last=sa.bindparam("family")),
            values,
        )
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_index("ix_leads_search_last", table_name="leads")
    op.drop_index("ix_leads_search_name", table_name="leads")
    with op.batch_alter_table("leads") as batch_op:
        batch_op.drop_column("search_last")
        batch_op.drop_column("search_name")
    op.drop_index("ix_messages_copy_kept", table_name="messages")
    with op.batch_alter_table("messages") as batch_op:
        batch_op.drop_column("sent_copy")
