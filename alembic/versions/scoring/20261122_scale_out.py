"""scale out: team points per county, a generation on the worker clock, partition owners

Several scoring workers share one database, each owning the counties of its partitions: team
points are stored per (team, county) and summed when read; the worker clock's generation moves
on every recomputation so workers know to rebuild their engines. Team points are derived data:
the next clock tick of each worker writes them again.

Revision ID: 0004_scoring
Revises: 0003_scoring
Create Date: 2026-11-22 12:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import services.kit.db

revision: str = "0004_scoring"
down_revision: str | None = "0003_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("team_points")
    op.create_table(
        "team_points",
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("findings_credited", sa.Integer(), nullable=False),
        sa.Column("absences", sa.Text(), nullable=False),
        sa.Column("as_of", services.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "region_code", name=op.f("pk_team_points")),
    )
    with op.batch_alter_table("worker_clock") as batch_op:
        batch_op.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("consumer_offset") as batch_op:
        batch_op.drop_column("owner")
    with op.batch_alter_table("worker_clock") as batch_op:
        batch_op.drop_column("generation")
    op.drop_table("team_points")
    op.create_table(
        "team_points",
        sa.Column("team_id", sa.String(length=64), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("as_of", services.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("team_id", name=op.f("pk_team_points")),
    )
