"""Where a scoring worker's batches are written while it applies the next one (`Worker.submit`):
on a thread of its own process, or, as deployed (`python -m services.scoring.worker`), in a child
process of its own.

On a thread, the write's Python (building rows, SQLAlchemy, the driver) shares the process's
interpreter lock with the engine: about a quarter of the worker's CPU an event
(docs/performance.md). The child takes that off the engine's core: it receives each batch's rows
(`store.Prepared`, pickled), writes them in one transaction, fenced as before, and answers how many
score rows changed.

Both writers keep the worker's contract: writes run one at a time, in the order submitted, and a
failed write is raised from its future as the worker's loop expects it: a database away as
`OperationalError` (the worker writes the batch again once it answers), another database error as
`DBAPIError`, `store.Stale` as itself. A child that died (killed, out of memory) is `store.Stale`:
whether its last write was committed or not, the worker rebuilds its engine from what is stored,
and the next write starts a new child. The child dies with the worker (`die_with_parent`): a
SIGKILLed worker leaves no writer behind to commit after its successor claimed the partitions (the
fence would refuse that write anyway).
"""

import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from services.kit.db import make_engine
from services.kit.relay_process import die_with_parent
from services.scoring import store

log = logging.getLogger("services.scoring.writer")


def persist(db: Engine, prepared: store.Prepared, stored: store.Stored | None = None) -> int:
    """One batch's rows in one transaction; the score rows it changed. `stored`: a writer's rows
    from its earlier writes (`store.Stored`); without, what the write needs is read."""
    with Session(db) as s:
        changed = store.persist(s, prepared, stored)
        s.commit()
    if stored is not None:
        stored.committed()
    return changed


class ThreadWriter:
    """Writes on one thread of this process (the worker as the tests build it)."""

    def __init__(self, db: Engine) -> None:
        self.db = db
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="scoring-writer")
        self.stored = store.Stored()

    def submit(self, prepared: store.Prepared) -> Future:
        return self.pool.submit(persist, self.db, prepared, self.stored)

    def close(self) -> None:
        self.pool.shutdown()


class WriteFailed(Exception):
    """A failed write, as the child sends it back: a database driver's exception may not survive
    pickling, so its kind and message travel instead (`kind`: operational, dbapi, other)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind, self.message = kind, message


_db: Engine | None = None  # the child's engine
_stored = store.Stored()  # the child's rows from its earlier writes


def _start_child(url: str, schema: str | None, parent: int) -> None:
    global _db
    die_with_parent(parent)
    # the worker ends its child (after the write in flight: `close`); a Ctrl-C or a SIGTERM sent
    # to the whole process group must not cut that write short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _db = make_engine(url, schema=schema)


def _persist_in_child(prepared: store.Prepared) -> int:
    try:
        return persist(_db, prepared, _stored)
    except store.Stale:
        raise
    except OperationalError as exc:
        raise WriteFailed("operational", str(exc)) from None
    except DBAPIError as exc:
        raise WriteFailed("dbapi", str(exc)) from None
    except Exception as exc:
        raise WriteFailed("other", f"{type(exc).__name__}: {exc}") from None


class ProcessWriter:
    """Writes in a child process (started on the first write, and again after one died) that has
    an engine of its own on the same database (`url`, PostgreSQL's `schema`)."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url, self.schema = url, schema
        self.pool: ProcessPoolExecutor | None = None
        self.broken = False  # the child died: the next write starts another

    def start(self) -> None:
        """Start the child now rather than at the first write (its imports take a second or two)."""
        self._pool().submit(int)

    def _pool(self) -> ProcessPoolExecutor:
        if self.broken and self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool, self.broken = None, False
        if self.pool is None:
            # spawned, not forked: the worker has threads (the consumer's, the relay's)
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_child, initargs=(self.url, self.schema, os.getpid()))
        return self.pool

    def submit(self, prepared: store.Prepared) -> Future:
        answer: Future = Future()
        try:
            written = self._pool().submit(_persist_in_child, prepared)
        except BrokenProcessPool as exc:
            self._gone(answer, exc)
            return answer
        written.add_done_callback(lambda f: self._answer(f, answer))
        return answer

    def _answer(self, written: Future, answer: Future) -> None:
        if written.cancelled():  # (a pool shut down with the write queued) never stored
            self._gone(answer, RuntimeError("the write was cancelled"))
            return
        exc = written.exception()
        if exc is None:
            answer.set_result(written.result())
        elif isinstance(exc, BrokenProcessPool):
            self._gone(answer, exc)
        elif isinstance(exc, WriteFailed):
            cause = Exception(exc.message)
            answer.set_exception(OperationalError(None, None, cause) if exc.kind == "operational"
                                 else DBAPIError(None, None, cause) if exc.kind == "dbapi"
                                 else RuntimeError(f"the writer process failed: {exc.message}"))
        else:
            answer.set_exception(exc)

    def _gone(self, answer: Future, exc: BaseException) -> None:
        log.warning("the writer process ended (%s): a new one writes the next batch", exc)
        self.broken = True
        answer.set_exception(store.Stale("the writer process ended; its last write may or may not be stored"))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
