"""the policy the scoring workers' configuration names, as the worker started last declared it

Before, each worker took KAOHE_SCORING_POLICY from its own settings: during a rolling update that
changed it, old and new workers each rescored every score under their own, back and forth. Now a
starting worker records its configured policy (with its rules) here and every worker follows the
row (services/scoring/policy_store.py). No row (every worker older than this revision, or none
started yet): each worker's own setting, as before.

Revision ID: 0008_scoring
Revises: 0007_scoring
Create Date: 2026-12-06 06:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from services.kit.db import UTCDateTime

revision: str = "0008_scoring"
down_revision: str | None = "0007_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "configured_policy",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("configured_at", UTCDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("configured_policy")
