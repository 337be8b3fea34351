"""What a writer keeps of its own writes between them, and when it may trust it.

A worker whose writes are serialised under one lock (the scoring writers, the ranking workers)
can keep the rows it wrote instead of reading them back for its next write, as long as nobody
else wrote since. Each write moves a count on the lock's own row (`move_count`); a writer that
finds the count one past its own last committed write knows nobody did.
"""

from collections.abc import Collection
from typing import Any

from sqlalchemy import Row, Table, Update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

KEEP_YEARS = 3  # the assessment years a writer keeps between writes: the latest three


class Kept:
    """Rows kept from this writer's committed writes, by assessment year (a subclass says which
    years it holds, `held_years`, and drops some, `drop_years`, or all, `forget`).

    Trusted only while the writers' count is where this writer's own last committed write left it:
    a write by anyone else, or one of ours that did not commit, and it is dropped (read again).
    At most `keep_years` years are kept once a write has committed, the latest (writes go nearly
    always to the latest): a writer running for years, or a rescore of many, does not hold them
    all. A year dropped is read again if written again."""

    def __init__(self, keep_years: int = KEEP_YEARS) -> None:
        self.keep_years = keep_years
        self.count: int | None = None  # what is held is committed as of this write
        self._pending: int | None = None

    def begin(self, count: int) -> None:
        """A write took the lock and moved the count to `count`."""
        if self.count is None or count != self.count + 1:
            self.forget()
        self.count, self._pending = None, count  # unknown until the write commits

    def committed(self) -> None:
        self.count, self._pending = self._pending, None
        # (trimmed here, not during a write: its years hold what it has not written yet)
        if len(held := self.held_years()) > self.keep_years:
            self.drop_years(sorted(held)[:-self.keep_years])

    def forget(self) -> None:
        raise NotImplementedError

    def held_years(self) -> Collection[int]:
        raise NotImplementedError

    def drop_years(self, years: list[int]) -> None:
        raise NotImplementedError


def move_count(session: Session, move: Update, table: Table, first: dict[str, Any]) -> Row:
    """Run `move`, an UPDATE … RETURNING of the one row of `table` (its row lock is the writers'
    lock: PostgreSQL's row lock, SQLite's write lock); a table without its row gets `first` (a
    concurrent insert wins) and the update again."""
    row = session.execute(move).one_or_none()
    if row is None:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(dialect.insert(table).values(**first).on_conflict_do_nothing(index_elements=["id"]))
        row = session.execute(move).one()
    return row


__all__ = ["KEEP_YEARS", "Kept", "move_count"]
