"""the steps left unknown, found without a scan by the confirmer (issue 17)

Revision ID: 1e_unknown_index
Revises: 1d_enrollment_requests
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1e_unknown_index"
down_revision: str | None = "1d_enrollment_requests"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_step_runs_unknown",
        "step_runs",
        ["claimed_at"],
        postgresql_where=sa.text("status = 'unknown'"),
        sqlite_where=sa.text("status = 'unknown'"),
    )


def downgrade() -> None:
    op.drop_index("ix_step_runs_unknown", table_name="step_runs")
