"""ranking writers move a sequence under its row lock (instead of an advisory lock)

Each write moves `write_sequence`'s one row, which is also the lock writers take: a worker that
finds the sequence where its own last write left it keeps the standings it holds instead of
reading them again (services/ranking/store.py, `Cache`).

Revision ID: 0003_ranking
Revises: 0002_ranking
Create Date: 2026-12-06 11:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_ranking"
down_revision: str | None = "0002_ranking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "write_sequence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_write_sequence")),
    )
    op.bulk_insert(table, [{"id": 1, "sequence": 0}])


def downgrade() -> None:
    op.drop_table("write_sequence")
