"""channels, suppression and consent (issue 5)

Revision ID: 1c_channels
Revises: 1b_inbox
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1c_channels"
down_revision: str | None = "1b_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the SMS parts a provider counted for a message (Twilio's num_segments)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segments", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("segments")
