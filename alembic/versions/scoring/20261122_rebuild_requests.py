"""rebuild requests: every score recomputed from intake's event store, on request

Revision ID: 0003_scoring
Revises: 0002_scoring
Create Date: 2026-11-22 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.kit.db

revision: str = "0003_scoring"
down_revision: str | None = "0002_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rebuild_request",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("requested_at", services.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", services.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("done_at", services.kit.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("events", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rebuild_request")),
    )


def downgrade() -> None:
    op.drop_table("rebuild_request")
