"""scoring writers count their writes on the worker clock's row

Every write moves `worker_clock.writes` under the row's lock, which every writer takes: a writer
that finds it where its own last write left it keeps the score rows and partition owners it holds
instead of reading them again (services/scoring/store.py, `Stored`).

Revision ID: 0009_scoring
Revises: 0008_scoring
Create Date: 2026-12-06 11:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_scoring"
down_revision: str | None = "0008_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker_clock") as batch_op:
        batch_op.add_column(sa.Column("writes", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("worker_clock") as batch_op:
        batch_op.drop_column("writes")
