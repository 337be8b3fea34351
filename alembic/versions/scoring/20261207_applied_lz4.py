"""scoring's applied_batch.records compressed with lz4 on PostgreSQL, not pglz

A write holds one poll's records as one value (about 2 MB for 5,000 events), which PostgreSQL
compresses when it moves it out of line (TOAST). With the default method, pglz, that took 18 ms of
the server's CPU a batch (3.7 µs an event, on the machine the worker shares); with lz4, 5 ms, for
a value about 15 % larger (measured: docs/performance.md, scoring worker, eighteenth session).
Rows written before keep pglz and read as before; each value names its method.

SQLite compresses nothing: nothing changes there. A PostgreSQL server built without lz4 refuses
the method: the column keeps pglz (a notice in the migration's log), as before this revision.

Revision ID: 0010_scoring
Revises: 0009_scoring
Create Date: 2026-12-07 00:00:00
"""
import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_scoring"
down_revision: str | None = "0009_scoring"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    _compression("lz4")


def downgrade() -> None:
    _compression("pglz")


def _compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():  # a refusal leaves the migration's transaction usable
            bind.execute(sa.text(f"ALTER TABLE applied_batch ALTER COLUMN records SET COMPRESSION {method}"))
    except sa.exc.DBAPIError as exc:
        log.warning("applied_batch.records keeps its compression: %s", str(exc.orig).splitlines()[0])
