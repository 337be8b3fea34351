"""`python -m services.notify.worker`: turn intake, scoring and ranking messages into webhook
notifications, watch rectification deadlines, and deliver.

Effectively once, as ranking: a poll's notifications, deliveries, finding states, dead letters
and consumed offsets are written in ONE transaction; on assignment the consumer seeks to the
offsets in our database; a notification's dedupe key (type + source ids) is unique, so a source
read twice makes no second notification. The dispatcher runs on its own thread beside the
consumer; delivery state lives in the database, so a restart loses nothing. A broker that lost its
log: the new log is read from its start, and intake's events are caught up from intake's export.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from services.events import topics
from services.kit.access import service_headers
from services.kit.consumer import LogWatch, consume, group_consumer, leave, paused, run_worker
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure, message_context
from services.kit.outbox import Relay, dead_letter_row
from services.kit.settings import Settings
from services.notify import store
from services.notify.base import Outbox
from services.notify.delivery import Dispatcher
from services.notify.notifications import TOPIC_HANDLERS, TOPICS, Batch

log = logging.getLogger("services.notify.worker")
GROUP = "kaohe-notify"
DEAD_LETTERS = [topics.dead_letter(t) for t in TOPICS]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Worker:
    def __init__(self, settings: Settings, db: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings, self.db, self.clock = settings, db, clock
        self.tz = ZoneInfo(settings.timezone)
        self.consumer = None
        self.logs = LogWatch()
        self.dispatcher = Dispatcher(settings, db, clock=clock)
        self.last_tick = 0.0
        self.behind = False  # intake's log was replaced: a catch-up from intake's export is due
        self.last_try = 0.0  # of the catch-up, while intake is away

    def connect(self) -> None:
        ensure_topics(self.settings.bootstrap_servers, [*TOPICS, *DEAD_LETTERS], self.settings.topic_partitions)
        self.consumer = group_consumer(self.settings, group=GROUP, topics=list(TOPICS),
                                       batch=self.settings.notify_batch, on_assigned=self.seek_stored)

    def seek_stored(self, partitions) -> None:
        with Session(self.db) as s:
            stored = store.stored_offsets(s)
        self.logs.place(self.consumer, partitions, stored)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def handle(self, messages) -> int:
        """Apply one poll's messages in one transaction; returns the deliveries created."""
        now = self.clock()
        batch = Batch(logs=dict(self.logs.ids))
        for m in messages:
            with message_context(m):  # its logs and its dead letter carry the message's request and event ids
                try:
                    batch.outbox_id = next((v.decode() for k, v in m.headers or () if k == "outbox_id"), None)
                    TOPIC_HANDLERS[m.topic](m.value, batch, self.tz)
                except ValueError as exc:
                    log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset,
                                str(exc).splitlines()[0])
                    batch.dead_letters.append(dead_letter_row(Outbox, m, str(exc), now))
            batch.offsets[(m.topic, m.partition)] = m.offset + 1
        with Session(self.db) as s:
            created = store.write(s, batch, self.tz, now)
            s.commit()
        return created

    def log_replaced(self, replaced: set[str]) -> None:
        """Intake's log replaced: the events it held that this worker had not read yet are gone with
        it. Caught up from intake's export now (or, intake away, on a later poll) while the new log
        is read from its start. Score and standing messages the old logs held unread are not
        recovered here: their grade crossings and rank changes are not notified (docs/reliability.md)."""
        if topics.INTAKE_EVENTS in replaced:
            self.behind = True
            self.catch_up_when_due()

    def catch_up_when_due(self) -> None:
        if not self.behind or time.monotonic() - self.last_try < 5.0:
            return
        self.last_try = time.monotonic()
        try:
            self.catch_up()
        except httpx.HTTPError as exc:
            log.warning("intake's export unavailable (%s): catching up later", exc)
            return
        self.behind = False

    def catch_up(self) -> int:
        """Every event of intake's store through the intake handlers, in intake's order, committed
        every 2,000: a notification already made is not made again (its dedupe key), findings and
        their states end as the store has them. Returns the deliveries created."""
        created, batch, started = 0, Batch(), time.monotonic()
        with paused(self.consumer) as meanwhile:
            for i, line in enumerate(self.export_lines(), 1):
                try:
                    TOPIC_HANDLERS[topics.INTAKE_EVENTS](line.encode(), batch, self.tz)
                except ValueError as exc:  # the store holds valid events only: not expected
                    log.warning("intake's export: line %d skipped: %s", i, str(exc).splitlines()[0])
                if i % 2000 == 0:
                    created += self._write(batch)
                    batch = Batch()
                    meanwhile()
            created += self._write(batch)
        log.warning("caught up from intake's export in %.1fs: %d deliveries the replaced log's events had not made",
                    time.monotonic() - started, created)
        return created

    def _write(self, batch: Batch) -> int:
        with Session(self.db) as s:
            created = store.write(s, batch, self.tz, self.clock())
            s.commit()
        return created

    def export_lines(self) -> Iterator[str]:
        """Intake's whole event store, in sequence order (`GET /v1/events/export`), streamed."""
        with httpx.stream("GET", f"{self.settings.intake_base_url}/v1/events/export",
                          headers=service_headers(self.settings),
                          timeout=httpx.Timeout(10.0, read=300.0)) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line:
                    yield line

    def tick(self) -> int:
        """Rectification deadlines that passed: one notification per finding, no event needed."""
        now = self.clock()
        with Session(self.db) as s:
            created = store.record(s, store.overdue_now(s, now.astimezone(self.tz).date(), self.tz), now)
            s.commit()
        self.last_tick = time.monotonic()
        return created

    def run(self, stop: threading.Event) -> None:
        sender = threading.Thread(target=self.dispatcher.run, args=(stop,), name="notify-dispatcher", daemon=True)
        sender.start()
        try:
            self.consume(stop)
        finally:
            stop.set()
            sender.join(2 * self.settings.notify_timeout_s + 5)

    def consume(self, stop: threading.Event) -> None:
        # a lost log is read again from its start: the dedupe keys drop what was already notified
        consume(stop, self, self.settings.notify_batch, every_poll=self.tick_when_due)

    def tick_when_due(self) -> None:
        self.catch_up_when_due()
        if time.monotonic() - self.last_tick >= self.settings.notify_tick_s:
            self.tick()

    def close(self) -> None:
        if self.consumer is not None:
            leave(self.consumer)
        self.dispatcher.close()


def build_relay(settings: Settings, db: Engine) -> Relay:
    """Publishes dead letters (notify publishes nothing else)."""
    return Relay.from_settings(settings, db, Outbox, DEAD_LETTERS)


def main() -> None:
    configure()
    settings = Settings()
    db = service_engine(settings, "notify")
    run_worker("notify", Worker(settings, db), build_relay(settings, db))


if __name__ == "__main__":
    main()


__all__ = ["GROUP", "Worker", "build_relay", "main"]
