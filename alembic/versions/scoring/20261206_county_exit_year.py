"""scoring's county cache keeps the baseline exit year of an exited county

A county is scored for a year in the league of its status at the end of that year; the cache
kept only the baseline status, so a county that exited in 2018 per intake's regions was scored as
exited for 2017 and every year before. Rows from before this revision have none (exited in every
year, as before): the worker fills it in from intake's regions when it next loads them.

Revision ID: 0007_scoring
Revises: 0006_scoring
Create Date: 2026-12-06 00:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_scoring"
down_revision: str | None = "0006_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("county") as batch_op:
        batch_op.add_column(sa.Column("exit_year", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("county") as batch_op:
        batch_op.drop_column("exit_year")
