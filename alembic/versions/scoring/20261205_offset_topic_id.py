"""scoring consumer offsets carry the Kafka topic id of the log they were read in

A broker that lost its log (tansu keeps nothing on restart) recreates its topics with new ids.
The worker checked on assignment that each partition still held, just before its stored offset,
the event it read last: on a new log shorter than that offset the check waited 10 s a partition,
inside the rebalance (a minute for six partitions after every `make run` restart, and the group
dropped the worker meanwhile). With the id stored, an offset stored for another log is known at
once. Rows from before this revision have none: they are checked by reading as before.

Revision ID: 0006_scoring
Revises: 0005_scoring
Create Date: 2026-12-05 21:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_scoring"
down_revision: str | None = "0005_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.add_column(sa.Column("topic_id", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.drop_column("topic_id")
