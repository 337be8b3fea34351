"""policy versions added over the API, and which one is active

Revision ID: 0002_scoring
Revises: 0001_scoring
Create Date: 2026-11-21 21:10:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.kit.db

revision: str = "0002_scoring"
down_revision: str | None = "0001_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", services.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy")),
    )


def downgrade() -> None:
    op.drop_table("policy")
