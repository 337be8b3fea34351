"""notify tracks findings by (county, finding id): partners' finding ids are unique per county only

Two counties may each have a finding F-0001: the primary key of `tracked_finding` becomes
(region_code, finding_id), so the second county's finding is tracked (and its deadline watched)
instead of being taken for the first's. The rows kept are unchanged (each has its county).

A downgrade restores the key finding_id alone: it refuses while two counties share a finding id
(which of them to forget is not a migration's choice).

Revision ID: 0003_notify
Revises: 0002_notify
Create Date: 2026-12-05 23:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_notify"
down_revision: str | None = "0002_notify"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracked_finding") as batch_op:
        batch_op.drop_constraint("pk_tracked_finding", type_="primary")
        batch_op.create_primary_key("pk_tracked_finding", ["region_code", "finding_id"])


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text(
        "SELECT finding_id FROM tracked_finding GROUP BY finding_id HAVING COUNT(*) > 1 ORDER BY finding_id LIMIT 5"
    )).scalars().all()
    if shared:
        raise RuntimeError(f"cannot downgrade 0003_notify: finding ids tracked in several counties: {shared}")
    with op.batch_alter_table("tracked_finding") as batch_op:
        batch_op.drop_constraint("pk_tracked_finding", type_="primary")
        batch_op.create_primary_key("pk_tracked_finding", ["finding_id"])
