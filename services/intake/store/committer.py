"""Group commit: every write request's events are appended by one thread, many requests per
transaction.

Appends are serial by design (one hash chain, one sequence), so the cost that matters is per
transaction, not per event. Requests that arrive while a transaction runs are appended
together in the next one, in arrival order, each item still judged on its own. A request is
answered only after the transaction holding its events has committed.
"""

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from services.events.v1 import Envelope
from services.intake.regions.service import Directory
from services.intake.store.service import Outcome, append_many
from services.kit import metrics
from services.kit.db import Busy
from services.kit.logs import REQUEST_ID
from services.kit.problems import InvalidEvent

log = logging.getLogger(__name__)

Item = Envelope | InvalidEvent


@dataclass(slots=True)
class _Request:
    items: Sequence[Item]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    request_id: str | None  # the submitting request's: its stored events and their messages carry it


class Unavailable(Busy):
    """The transaction holding a request's events failed; nothing of it was stored."""


class GroupCommitter:
    def __init__(self, engine: Engine, directory: Directory, *, clock: Callable[[], datetime],
                 max_future: timedelta, max_items: int = 2000) -> None:
        self.engine, self.directory, self.clock, self.max_future = engine, directory, clock, max_future
        self.max_items = max_items
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="intake-committer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None

    async def submit(self, items: Sequence[Item]) -> list[Outcome]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Request(items, future, loop, REQUEST_ID.get()))
        return await future

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            group, count = [first], len(first.items)
            while count < self.max_items:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
                count += len(more.items)
            self._commit(group)

    def _commit(self, group: list[_Request]) -> None:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                outcomes = append_many(session=session, items=[i for r in group for i in r.items],
                                       directory=self.directory, clock=self.clock, max_future=self.max_future,
                                       request_ids=[r.request_id for r in group for _ in r.items])
                session.commit()
        except SQLAlchemyError as exc:
            log.warning("append transaction failed (%d requests answered 503): %s", len(group),
                        str(exc).splitlines()[0])
            for r in group:
                r.loop.call_soon_threadsafe(_set_exception, r.future, Unavailable(str(exc).splitlines()[0]))
            return
        except Exception as exc:  # noqa: BLE001 - a bug must still answer every waiting request
            log.exception("append transaction failed")
            for r in group:
                r.loop.call_soon_threadsafe(_set_exception, r.future, exc)
            return
        count(outcomes)
        start = 0
        for r in group:
            part = outcomes[start:start + len(r.items)]
            start += len(r.items)
            r.loop.call_soon_threadsafe(_set_result, r.future, part)


def count(outcomes: Sequence[Outcome]) -> None:
    """Committed outcomes into the intake metrics (accepted by type, refused by status)."""
    for o in outcomes:
        if o.status == "accepted":
            metrics.INTAKE_EVENTS_ACCEPTED.labels(o.record["type"]).inc()
        elif o.status == "rejected" and o.problem is not None:
            metrics.INTAKE_EVENTS_REJECTED.labels(str(o.problem.status)).inc()


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
