"""batched rows: applied events and explanation lines as one row per write

The scoring worker wrote a row per applied event (its record, under a random UUID primary key and
a sequence index) and a row per explanation line (about 1.4 an event): two thirds of its write
and a third of all it did per event. Now a write stores its events as one `applied_batch` row
(the records one per line, their counties alongside) and its explanation lines as one
`explanation_batch` row per county-year. Existing rows are moved over in their order.

Revision ID: 0005_scoring
Revises: 0004_scoring
Create Date: 2026-12-03 20:00:00
"""
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from itertools import groupby

import orjson
import sqlalchemy as sa

import services.kit.db
from alembic import op

revision: str = "0005_scoring"
down_revision: str | None = "0004_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS_A_ROW = 5000
LINES_A_ROW = 1000
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

applied_event = sa.table("applied_event", sa.column("event_id", sa.Uuid()), sa.column("sequence", sa.BigInteger()),
                         sa.column("region_code", sa.String()), sa.column("record", sa.Text()))
explanation = sa.table("explanation", sa.column("id", ID), sa.column("region_code", sa.String()),
                       sa.column("year", sa.Integer()), sa.column("component", sa.String()),
                       sa.column("points", sa.Float()), sa.column("rule", sa.String()), sa.column("cause", sa.String()),
                       sa.column("policy_id", sa.String()), sa.column("at", services.kit.db.UTCDateTime()))
applied_batch = sa.table("applied_batch", sa.column("events", sa.Integer()), sa.column("regions", sa.Text()),
                         sa.column("records", sa.LargeBinary()))
explanation_batch = sa.table("explanation_batch", sa.column("region_code", sa.String()),
                             sa.column("year", sa.Integer()), sa.column("policy_id", sa.String()),
                             sa.column("lines", sa.Text()))


def _pages(query, key, page: int = 5000) -> Iterator[list]:
    """Rows of `query` in `key` order, a page at a time (key-set: the tables can be large)."""
    conn, after = op.get_bind(), None
    while True:
        rows = conn.execute((query if after is None else query.where(key > after)).order_by(key).limit(page)).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _one_line(record: bytes) -> bytes:
    """A record on one line: JSON's whitespace taken out only where it holds a line break."""
    return orjson.dumps(orjson.loads(record)) if b"\n" in record else record


def _create_batches() -> None:
    op.create_table(
        "applied_batch",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("events", sa.Integer(), nullable=False),
        sa.Column("regions", sa.Text(), nullable=False),
        sa.Column("records", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_applied_batch")),
    )
    op.create_table(
        "explanation_batch",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("lines", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_explanation_batch")),
    )
    op.create_index("ix_explanation_batch_region_code_year_id", "explanation_batch", ["region_code", "year", "id"])


def _create_rows() -> None:
    op.create_table(
        "applied_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_applied_event")),
    )
    op.create_index("ix_applied_event_sequence", "applied_event", ["sequence"])
    op.create_table(
        "explanation",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("component", sa.String(length=32), nullable=False),
        sa.Column("points", sa.Float(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("cause", sa.String(length=64), nullable=False),
        sa.Column("policy_id", sa.String(length=64), nullable=False),
        sa.Column("at", services.kit.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_explanation")),
    )
    op.create_index("ix_explanation_region_code_year_id", "explanation", ["region_code", "year", "id"])


def upgrade() -> None:
    _create_batches()
    conn = op.get_bind()
    # events: in intake's order, as the worker rebuilt its engine from them
    query = sa.select(applied_event.c.sequence, applied_event.c.region_code, applied_event.c.record)
    for rows in _pages(query, applied_event.c.sequence, EVENTS_A_ROW):
        conn.execute(sa.insert(applied_batch), [{
            "events": len(rows), "regions": "".join(r.region_code for r in rows),
            "records": b"\n".join(_one_line(r.record.encode()) for r in rows)}])
    # explanation lines: each county-year's in their order, a row per run of one policy
    query = sa.select(explanation.c.id, explanation.c.region_code, explanation.c.year, explanation.c.policy_id,
                      explanation.c.component, explanation.c.points, explanation.c.rule, explanation.c.cause,
                      explanation.c.at)
    held: dict[tuple[str, int], list] = {}
    for rows in _pages(query, explanation.c.id):
        for r in rows:
            held.setdefault((r.region_code, r.year), []).append(r)
    for (code, year), lines in sorted(held.items()):
        for policy_id, run in groupby(lines, key=lambda r: r.policy_id):
            run = list(run)
            for i in range(0, len(run), LINES_A_ROW):
                conn.execute(sa.insert(explanation_batch), [{
                    "region_code": code, "year": year, "policy_id": policy_id,
                    "lines": orjson.dumps([(r.component, r.points, r.rule, r.cause, r.at)
                                           for r in run[i:i + LINES_A_ROW]]).decode()}])
    op.drop_index("ix_explanation_region_code_year_id", table_name="explanation")
    op.drop_table("explanation")
    op.drop_index("ix_applied_event_sequence", table_name="applied_event")
    op.drop_table("applied_event")


def downgrade() -> None:
    _create_rows()
    conn = op.get_bind()
    batch = sa.table("applied_batch", sa.column("id", ID), sa.column("records", sa.LargeBinary()))
    for rows in _pages(sa.select(batch.c.id, batch.c.records), batch.c.id, 10):
        for r in rows:
            records = [(line, orjson.loads(line)) for line in r.records.split(b"\n")]
            conn.execute(sa.insert(applied_event), [
                {"event_id": uuid.UUID(record["event_id"]), "sequence": record["sequence"], "region_code": record["region_code"],
                 "record": line.decode()} for line, record in records])
    lines = sa.table("explanation_batch", sa.column("id", ID), sa.column("region_code", sa.String()),
                     sa.column("year", sa.Integer()), sa.column("policy_id", sa.String()), sa.column("lines", sa.Text()))
    query = sa.select(lines.c.id, lines.c.region_code, lines.c.year, lines.c.policy_id, lines.c.lines)
    for rows in _pages(query, lines.c.id, 1000):
        conn.execute(sa.insert(explanation), [
            {"region_code": r.region_code, "year": r.year, "component": component, "points": points, "rule": rule,
             "cause": cause, "policy_id": r.policy_id, "at": datetime.fromisoformat(at).astimezone(timezone.utc)}
            for r in rows for component, points, rule, cause, at in orjson.loads(r.lines)])
    op.drop_index("ix_explanation_batch_region_code_year_id", table_name="explanation_batch")
    op.drop_table("explanation_batch")
    op.drop_table("applied_batch")
