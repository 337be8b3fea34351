"""Plain INSERTs of many rows straight through the driver: COPY on PostgreSQL, executemany on SQLite.

`session.execute(insert(table), rows)` spends most of its time, for a few thousand narrow rows,
in SQLAlchemy's per-row work (building parameter sets, calling each column's type processors).
`insert_rows` converts each column's values with that same column type's bind processor (so what
is stored is exactly what SQLAlchemy would store: a UUID as 32 hex digits on SQLite, a
timestamp as UTC text) and hands the driver the rows in one go. On PostgreSQL that is
`COPY ... FROM STDIN` (psycopg 3 adapts each value as it would for a parameter), several times
faster than an executemany of INSERTs for thousands of rows; it takes the same row locks and
fires the same constraints, inside the session's transaction.
"""

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

_PLANS: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[Callable[[Any], Any] | None]]] = {}


def _plan(session: Session, table: Table, columns: tuple[str, ...]) -> tuple[str, list[Callable[[Any], Any] | None]]:
    dialect = session.get_bind().dialect
    key = (dialect.name, table.name, columns)
    plan = _PLANS.get(key)
    if plan is None:
        preparer = dialect.identifier_preparer
        target = f"{preparer.format_table(table)} ({', '.join(preparer.quote(c) for c in columns)})"
        if dialect.name == "postgresql":
            sql = f"COPY {target} FROM STDIN"
        else:
            marker = "?" if dialect.paramstyle == "qmark" else "%s"
            sql = f"INSERT INTO {target} VALUES ({', '.join([marker] * len(columns))})"
        processors = [table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        plan = _PLANS[key] = (sql, processors)
    return plan


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) into `table` in the session's transaction."""
    if not rows:
        return
    columns = tuple(rows[0])
    sql, processors = _plan(session, table, columns)
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


__all__ = ["insert_rows"]
