"""INSERTs and upserts of many rows straight through the driver: COPY on PostgreSQL, executemany
on SQLite; upserts are an executemany on both.

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
"""

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

COPY_FROM = 16  # rows, on PostgreSQL
_PLANS: dict[tuple[str, str, tuple[str, ...], tuple[str, ...] | None, bool],
             tuple[str, list[Callable[[Any], Any] | None]]] = {}


def _plan(session: Session, table: Table, columns: tuple[str, ...], keys: tuple[str, ...] | None = None,
          copy: bool = True) -> tuple[str, list[Callable[[Any], Any] | None]]:
    """The statement (COPY on PostgreSQL if `copy`, INSERT, or with `keys` INSERT … ON CONFLICT DO
    UPDATE) and each column's bind processor, made once per table and set of columns."""
    dialect = session.get_bind().dialect
    key = (dialect.name, table.name, columns, keys, copy)
    plan = _PLANS.get(key)
    if plan is None:
        preparer = dialect.identifier_preparer
        target = f"{preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)})"
        marker = "?" if dialect.paramstyle == "qmark" else "%s"
        if keys is not None:
            updated = ", ".join(f"{preparer.quote(c)} = excluded.{preparer.quote(c)}" for c in columns if c not in keys)
            sql = (f"INSERT INTO {target} VALUES ({', '.join([marker] * len(columns))}) "
                   f"ON CONFLICT ({', '.join(preparer.quote(k) for k in keys)}) DO UPDATE SET {updated}")
        elif dialect.name == "postgresql" and copy:
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
    sql, processors = _plan(session, table, columns, copy=len(rows) >= COPY_FROM)
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
    ON CONFLICT DO UPDATE, an executemany on both backends): what `kit.upsert.upsert` does,
    without SQLAlchemy's statement compilation and per-row parameter work."""
    if not rows:
        return
    columns = tuple(rows[0])
    sql, processors = _plan(session, table, columns, tuple(keys))
    session.connection().exec_driver_sql(sql, [tuple(v) for v in _values(rows, columns, processors)])


__all__ = ["insert_rows", "upsert_rows"]
