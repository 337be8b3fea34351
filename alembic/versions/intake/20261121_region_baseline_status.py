"""region baseline status: the status before any event (what scoring starts from)

Revision ID: 0002_intake
Revises: 0001_intake
Create Date: 2026-11-21 20:45:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_intake"
down_revision: str | None = "0001_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("region", schema=None) as batch_op:
        batch_op.add_column(sa.Column("baseline_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("baseline_exit_year", sa.Integer(), nullable=True))
    # rows no event has changed yet: their status is the baseline. A status an event already
    # changed is left NULL (scoring then starts such a county in the main league).
    op.execute("UPDATE region SET baseline_status = status, baseline_exit_year = exit_year "
               "WHERE status IS NOT NULL AND (status_basis IS NULL OR status_basis <> 'event')")


def downgrade() -> None:
    with op.batch_alter_table("region", schema=None) as batch_op:
        batch_op.drop_column("baseline_exit_year")
        batch_op.drop_column("baseline_status")
