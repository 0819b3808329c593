"""channels, suppression and consent (issue 5)

Revision ID: 1c_channels
Revises: 1b_inbox
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

revision: str = "1c_channels"
down_revision: str | None = "1b_inbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
