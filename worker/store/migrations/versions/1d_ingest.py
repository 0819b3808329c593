"""set-based ingest (issue 4)

Revision ID: 1d_ingest
Revises: 1c_channels
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

revision: str = "1d_ingest"
down_revision: str | None = "1c_channels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
