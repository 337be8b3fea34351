"""county ids: the ids partners choose are unique within a county, not across the store

The keys of `finding`, `household_risk` and `natural_key` (inspection and daily-check ids) take
`region_code`; `finding_transition` gets the county of its finding, to read a finding's history
by (region_code, finding_id). Existing rows keep their ids (they were unique store-wide, so they
are unique per county). The id stays the keys' leading column (after `kind`), so intake's batch
look-ups of a list of ids keep using the key's index, as before.

The downgrade puts the store-wide keys back, so it refuses, changing nothing, while two counties
share an id (a finding, a household, an inspection or a daily check): those rows must first be
given distinct ids by hand.

Revision ID: 0003_intake
Revises: 0002_intake
Create Date: 2026-12-05 23:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_intake"
down_revision: str | None = "0002_intake"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table → (primary key before, primary key after)
KEYS = {
    "finding": (["finding_id"], ["finding_id", "region_code"]),
    "household_risk": (["household_id"], ["household_id", "region_code"]),
    "natural_key": (["kind", "key"], ["kind", "key", "region_code"]),
}


def _primary_key(table: str, columns: list[str]) -> None:
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_constraint(f"pk_{table}", type_="primary")
        batch_op.create_primary_key(f"pk_{table}", columns)


def upgrade() -> None:
    for table, (_, after) in KEYS.items():
        _primary_key(table, after)
    with op.batch_alter_table("finding_transition", schema=None) as batch_op:
        batch_op.add_column(sa.Column("region_code", sa.String(length=6), nullable=True))
    # finding ids were unique store-wide until now: a transition's finding names its county
    op.execute("UPDATE finding_transition SET region_code = (SELECT finding.region_code FROM finding "
               "WHERE finding.finding_id = finding_transition.finding_id)")
    with op.batch_alter_table("finding_transition", schema=None) as batch_op:
        batch_op.alter_column("region_code", existing_type=sa.String(length=6), nullable=False)
        batch_op.drop_index("ix_finding_transition_finding_id")
        batch_op.create_index("ix_finding_transition_finding_id_region_code", ["finding_id", "region_code"],
                              unique=False)


def _shared_ids() -> list[str]:
    """Ids that more than one county uses (what the store-wide keys cannot hold), a few of each kind."""
    bind = op.get_bind()
    shared = []
    for table, (before, _) in KEYS.items():
        columns = ", ".join(before)
        rows = bind.execute(sa.text(f"SELECT {columns}, COUNT(*) FROM {table} GROUP BY {columns} "  # noqa: S608
                                    f"HAVING COUNT(*) > 1 ORDER BY {columns} LIMIT 5")).all()
        shared += [f"{table} {'/'.join(map(str, row[:-1]))} (in {row[-1]} counties)" for row in rows]
    return shared


def downgrade() -> None:
    shared = _shared_ids()
    if shared:
        raise RuntimeError("cannot downgrade 0003_intake: ids are unique per county now and these are used in "
                           "more than one county, which the store-wide keys of 0002_intake cannot hold: "
                           + "; ".join(shared) + ". Give them distinct ids first; nothing was changed.")
    with op.batch_alter_table("finding_transition", schema=None) as batch_op:
        batch_op.drop_index("ix_finding_transition_finding_id_region_code")
        batch_op.create_index("ix_finding_transition_finding_id", ["finding_id"], unique=False)
        batch_op.drop_column("region_code")
    for table, (before, _) in KEYS.items():
        _primary_key(table, before)
