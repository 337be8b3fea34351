"""Look-ups of a batch's keys in one go, planned for the keys they are given.

On PostgreSQL a key list is one parameter, an array literal cast to the column's array type
(`column = ANY(CAST(:keys AS type[]))`, the parameter untyped: PostgreSQL reads it as that array
type, a constant of the plan), one statement text for every batch size, and the append transaction
plans each statement for its actual parameters (`custom_plans`). Without that, psycopg prepares a
statement it has run five times and PostgreSQL soon settles on a generic plan, chosen once for the
table as it was then and kept by that connection: on tables without statistics (autovacuum off, or
not yet run after a large import) one chosen while `natural_key` held a few hundred rows scanned
every key of the kind and compared each with the parameters one by one, 0.99 s for 1,000 keys at
40,000 rows (a custom plan: 9 ms, the constant array hashed), and so it grew with the store
(0.4-0.75 s per look-up near 300,000 events in the first PostgreSQL fill). SQLite has no arrays: IN
lists of up to 500 keys, which it answers from the index.
"""

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, any_, bindparam, cast, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

CHUNK = 500  # SQLite: keys per IN list


def members(session: Session, column: Any, keys: Sequence[Any]) -> Iterator[ColumnElement[bool]]:
    """Conditions `column in keys`, one per statement to run (none for no keys)."""
    if not keys:
        return
    if session.get_bind().dialect.name == "postgresql":
        # untyped: a text parameter would be cast for every row compared (array_in is not immutable)
        keys_param = bindparam(f"{column.key}_keys", array_text(keys), type_=NullType())
        yield column == any_(cast(keys_param, ARRAY(column.type)))
        return
    for i in range(0, len(keys), CHUNK):
        yield column.in_(keys[i:i + CHUNK])


def array_text(keys: Sequence[Any]) -> str:
    """`keys` as one PostgreSQL array literal, every element quoted (`{"a","b\\"c"}`): the server
    reads it as the column's array type. A list parameter costs psycopg a Python dumper call per
    element, three times the time of this for a thousand keys."""
    return "{" + ",".join('"' + str(k).replace("\\", "\\\\").replace('"', '\\"') + '"' for k in keys) + "}"


def custom_plans(session: Session) -> None:
    """PostgreSQL: until this transaction ends, plan every statement for its actual parameters."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


__all__ = ["array_text", "custom_plans", "members"]
