"""Look-ups of a batch's keys in one go, with a plan that does not depend on how many there are.

On PostgreSQL a key list is one array parameter (`column = ANY(:keys)`): one statement text for
every batch size, so psycopg's prepared statement is reused, and its generic plan probes the index
once per key. An `IN (:k1, …, :k500)` list did not survive that generic plan on tables without
statistics (autovacuum off, or not yet run after a large import): PostgreSQL then filtered every
row of `natural_key` against the 500 parameters one by one, seconds per look-up at 300,000 rows.
SQLite has no arrays: IN lists of up to 500 keys, which it answers from the index.
"""

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

CHUNK = 500  # SQLite: keys per IN list


def members(session: Session, column: Any, keys: Sequence[Any]) -> Iterator[ColumnElement[bool]]:
    """Conditions `column in keys`, one per statement to run (none for no keys)."""
    if not keys:
        return
    if session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(f"{column.key}_keys", list(keys), type_=ARRAY(column.type)))
        return
    for i in range(0, len(keys), CHUNK):
        yield column.in_(keys[i:i + CHUNK])


__all__ = ["members"]
