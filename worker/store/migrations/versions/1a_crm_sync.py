"""CRM sync outbox (issue 6)

Revision ID: 1a_crm_sync
Revises: 0c879e5a3c94
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

revision: str = "1a_crm_sync"
down_revision: str | None = "0c879e5a3c94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
