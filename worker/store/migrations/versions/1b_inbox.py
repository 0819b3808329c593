"""inbox poller state (issue 7)

Revision ID: 1b_inbox
Revises: 1a_crm_sync
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

revision: str = "1b_inbox"
down_revision: str | None = "1a_crm_sync"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
