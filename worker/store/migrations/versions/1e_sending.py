"""batched sending (issue 3)

Revision ID: 1e_sending
Revises: 1d_ingest
Create Date: 2026-11-22 10:50:00
"""

from collections.abc import Sequence

revision: str = "1e_sending"
down_revision: str | None = "1d_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
