"""INSERTs and upserts of many rows straight through the driver: COPY and one set-based upsert on
PostgreSQL, executemany on SQLite.

`session.execute(insert(table), rows)` spends most of its time, for a few thousand narrow rows,
in SQLAlchemy's per-row work (building parameter sets, calling each column's type processors).
`insert_rows` converts each column's values with that same column type's bind processor (so what
is stored is exactly what SQLAlchemy would store: a UUID as 32 hex digits on SQLite, a
timestamp as UTC text) and hands the driver the rows in one go. On PostgreSQL that is
`COPY ... FROM STDIN` (psycopg 3 adapts each value as it would for a parameter), several times
faster than an executemany of INSERTs for thousands of rows; it takes the same row locks and
fires the same constraints, inside the session's transaction. A few rows (fewer than `COPY_FROM`)
go as INSERT there too: COPY gains nothing on them, and its text form of a large value (a scoring
write's one row holding a poll's records, megabytes of bytea) cost the worker several copies of
the value in memory and about 30 ms a write.

Upserts of many rows on PostgreSQL are one statement, set-based: `INSERT … SELECT … FROM
jsonb_array_elements(…) ON CONFLICT DO UPDATE`, the rows one JSON parameter (made by orjson, read by
PostgreSQL, both in C; each value cast to its column's type). An executemany of one INSERT … ON
CONFLICT per row (what SQLite still gets, in process) cost the scoring worker's writer a round of
the protocol per row and PostgreSQL an executed statement per row: about a thousand a batch (score
rows, team points), most of the writer's time; the rows as arrays, one per column, took psycopg's
list dumper (Python) a third of it (docs/performance.md).
"""

import functools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Boolean, DateTime, Float, Integer, String, Table, TypeDecorator
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

COPY_FROM = 16  # rows, on PostgreSQL
JSON_FROM = 16  # rows an upsert sends as one JSON value on PostgreSQL (fewer: an executemany, as on SQLite)
# column types whose values (after their bind processors) orjson writes and PostgreSQL reads back
# the same: text, whole numbers, floats (shortest round-trip form; not NaN or infinity, `_as_json`),
# flags, aware timestamps
JSON_TYPES = (String, Integer, Float, Boolean, DateTime)
_PLANS: dict[tuple[str, str, tuple[str, ...], tuple[str, ...] | None, bool],
             tuple[str, list[Callable[[Any], Any] | None]]] = {}


def _plan(session: Session, table: Table, columns: tuple[str, ...], keys: tuple[str, ...] | None = None,
          many: bool = True) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """The statement and each column's bind processor, made once per table and set of columns: an
    INSERT, or with `keys` an INSERT … ON CONFLICT DO UPDATE; on PostgreSQL with `many`, a COPY
    instead of the INSERT, and the upsert's rows as one JSON value."""
    dialect = session.get_bind().dialect
    key = (dialect.name, table.name, columns, keys, many)
    plan = _PLANS.get(key)
    if plan is None:
        preparer = dialect.identifier_preparer
        target = f"{preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)})"
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        if keys is not None:
            updated = ", ".join(f"{preparer.quote(c)} = excluded.{preparer.quote(c)}" for c in columns if c not in keys)
            if dialect.name == "postgresql" and many:  # the rows as one JSON array of arrays (jsonb: parsed once)
                values = ", ".join(f"(r->>{i})::{_cast_type(table, c, dialect)}" for i, c in enumerate(columns))
                source = f"SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS rows(r)"
            else:
                source = f"VALUES ({', '.join([marker] * len(columns))})"
            sql = (f"INSERT INTO {target} {source} "
                   f"ON CONFLICT ({', '.join(preparer.quote(k) for k in keys)}) DO UPDATE SET {updated}")
        elif dialect.name == "postgresql" and many:
            sql = f"COPY {target} FROM STDIN"
        else:
            sql = f"INSERT INTO {target} VALUES ({', '.join([marker] * len(columns))})"
        processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        plan = _PLANS[key] = (sql, processors)
    return plan


def _values(rows: Sequence[dict[str, Any]], columns: tuple[str, ...],
            processors: list[Callable[[Any], Any] | None]) -> list[list[Any]]:
    """Each row's values in `columns` order, as the driver takes them."""
    values = [[r[c] for c in columns] for r in rows]
    for i, process in enumerate(processors):
        if process is None:
            continue
        memo: dict[Any, Any] = {}  # rows of one batch repeat values (a timestamp, a cause)
        for v in values:
            raw = v[i]
            if raw is None:
                continue
            try:
                v[i] = memo[raw]
            except KeyError:
                v[i] = memo[raw] = process(raw)
            except TypeError:  # unhashable
                v[i] = process(raw)
    return values


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) into `table` in the session's transaction."""
    if not rows:
        return
    columns = tuple(rows[0])
    sql, processors = _plan(session, table, columns, many=len(rows) >= COPY_FROM)
    values = _values(rows, columns, processors)
    connection = session.connection()
    if not sql.startswith("COPY"):
        connection.exec_driver_sql(sql, [tuple(v) for v in values])
        return
    dialect, raw = connection.dialect, connection.connection.dbapi_connection
    try:
        with raw.cursor() as cursor, cursor.copy(sql) as copy:
            for v in values:
                copy.write_row(v)
    except dialect.loaded_dbapi.Error as exc:
        # what SQLAlchemy does for a statement it runs: a lost connection leaves the pool, and the
        # error is SQLAlchemy's (IntegrityError, OperationalError...) for callers to catch as usual
        lost = dialect.is_disconnect(exc, raw, None)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                  dialect=dialect) from exc


def upsert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
    """INSERT `rows`, replacing every other column of those whose `keys` exist already (INSERT …
    ON CONFLICT DO UPDATE): what `kit.upsert.upsert` does, without SQLAlchemy's statement
    compilation and per-row parameter work. On PostgreSQL, `JSON_FROM` rows or more are one
    statement (the rows as one JSON value); fewer, and on SQLite, an executemany."""
    if not rows:
        return
    columns = tuple(rows[0])
    connection = session.connection()
    floats = _json_floats(table, columns)
    as_json = connection.dialect.name == "postgresql" and len(rows) >= JSON_FROM and floats is not None
    if as_json:
        # one statement may not update a row twice: of rows with the same key the last one counts,
        # as it does when each row is a statement of its own
        last = {tuple(r[k] for k in keys): r for r in rows}
        if len(last) < len(rows):
            rows = list(last.values())
    sql, processors = _plan(session, table, columns, tuple(keys), many=as_json)
    values = _values(rows, columns, processors)
    document = _as_json(values, floats) if as_json else None
    if as_json and document is None:  # a value with no JSON form: each row a statement of its own
        sql = _plan(session, table, columns, tuple(keys), many=False)[0]  # (the same processors)
    connection.exec_driver_sql(sql, (document,) if document is not None else [tuple(v) for v in values])


@functools.cache
def _json_floats(table: Table, columns: tuple[str, ...]) -> tuple[int, ...] | None:
    """Where the float columns are among `columns`, or None if one of their types is not in
    JSON_TYPES (the rows then go as an executemany)."""
    kinds = [table.c[c].type for c in columns]
    kinds = [k.impl if isinstance(k, TypeDecorator) else k for k in kinds]
    if not all(isinstance(k, JSON_TYPES) for k in kinds):
        return None
    return tuple(i for i, k in enumerate(kinds) if isinstance(k, Float))


def _cast_type(table: Table, column: str, dialect: Any) -> str:
    """The type a JSON value is cast to for `column`: the column's without a length (a cast to
    VARCHAR(6) would cut a longer text short; the INSERT's own assignment rejects it instead)."""
    return re.sub(r"\(\d+\)", "", table.c[column].type.compile(dialect=dialect))


def _as_json(values: list[list[Any]], floats: tuple[int, ...]) -> str | None:
    """The rows as a JSON array of arrays, or None if one holds a value JSON has no form for (a
    float that is NaN or infinite, which orjson would write as null; a Decimal)."""
    if not all(math.isfinite(v[i]) for i in floats for v in values if v[i] is not None):
        return None
    try:
        return orjson.dumps(values).decode()
    except orjson.JSONEncodeError:
        return None


__all__ = ["insert_rows", "upsert_rows"]
