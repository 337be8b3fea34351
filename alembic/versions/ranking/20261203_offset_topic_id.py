"""ranking consumer offsets carry the Kafka topic id of the log they were read in

A broker that lost its log recreates its topics with new ids: a worker placed at offsets stored
for the old log would skip the new log's head. On assignment an offset stored for another log is
not used (the log is read from its start). Rows from before this revision have none: trusted.

Revision ID: 0002_ranking
Revises: 0001_ranking
Create Date: 2026-12-03 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_ranking"
down_revision: str | None = "0001_ranking"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.add_column(sa.Column("topic_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.drop_column("topic_id")
