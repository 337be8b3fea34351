"""Transactional outbox: Kafka messages are rows written in the business transaction,
published by a relay that marks them sent only after the broker acknowledged them.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlmodel import Field, Session, SQLModel

from services.events import topics
from services.kit import metrics
from services.kit.db import BUSY_TIMEOUT_MS, UTCDateTime
from services.kit.kafka import KafkaError, ensure_topics, producer
from services.kit.logs import current_ids

log = logging.getLogger(__name__)
LINGER_MS = 1000  # the relay producer's (`Relay._ensure_ready`); below kit.kafka's delivery less request timeout


def outbox_model(base: type[SQLModel]) -> type[SQLModel]:
    """The `outbox` table of one service (each service owns its own)."""

    class Outbox(base, table=True):  # type: ignore[misc, valid-type]
        __tablename__ = "outbox"
        __table_args__ = (
            Index("ix_outbox_unsent", "id", sqlite_where=Column("sent_at").is_(None),
                  postgresql_where=Column("sent_at").is_(None)),
        )

        id: int | None = Field(default=None, sa_column=Column(
            BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True))
        topic: str = Field(sa_column=Column(String(200), nullable=False))
        key: str = Field(sa_column=Column(String(200), nullable=False))
        value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
        headers: str = Field(sa_column=Column(Text, nullable=False), default="{}")
        created_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
        sent_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime, nullable=True))

    return Outbox


def outbox_row(model: type[SQLModel], *, topic: str, key: str, value: bytes, headers: dict[str, str],
               now: datetime) -> dict[str, Any]:
    """Column values of one outbox row (for bulk insert). The current request and event ids
    (services.kit.logs) travel in the headers unless the caller set those headers itself."""
    ids = current_ids()
    if ids:
        headers = {**ids, **headers}
    return {"topic": topic, "key": key, "value": value, "headers": orjson.dumps(headers).decode(),
            "created_at": now}


def dead_letter_row(model: type[SQLModel], message: Any, error: str, now: datetime) -> dict[str, Any]:
    """An outbox row sending an unusable consumed message to `<topic>.dlt`, naming the error and
    where the message came from (original topic, partition, offset)."""
    key = (message.key or b"").decode("utf-8", "replace")
    metrics.DEAD_LETTERS.labels(message.topic).inc()
    return outbox_row(model, topic=topics.dead_letter(message.topic), key=key,
                      value=message.value if message.value is not None else b"", now=now,
                      headers={"error": error[:500], "original_topic": message.topic,
                               "original_partition": str(message.partition), "original_offset": str(message.offset)})


class Message(NamedTuple):
    """One message to publish; `id` orders them and is what the relay marks once acknowledged."""

    id: int
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Relay:
    """Publishes unsent outbox rows in id order; one relay per service database.

    A subclass publishes from another table by overriding `_read`, `_mark`, `backlog`,
    `oldest_unsent_age` and `prune` (intake's relay reads its event store: services/intake/relay.py).
    """

    def __init__(self, engine: Engine, model: type[SQLModel], bootstrap_servers: str, *, topics: list[str],
                 partitions: int, batch_size: int = 500, idle_s: float = 0.05,
                 retention: timedelta = timedelta(hours=24)) -> None:
        self.engine, self.model, self.bootstrap_servers = engine, model, bootstrap_servers
        self.topics, self.partitions = topics, partitions
        self.batch_size, self.idle_s, self.retention = batch_size, idle_s, retention
        self._producer = None
        self._topics_ready = False
        self._last_prune = 0.0
        # SQLite: rows published but not yet marked sent (the mark waits for no write lock), and the
        # highest id published, from which the next batch is read
        self._unmarked: list[int] = []
        self._published_through = 0
        self.last_error: str | None = None
        # called with each batch's {topic: rows acknowledged} (a relay process reports them to its worker)
        self.on_published: Callable[[dict[str, int]], None] | None = None
        self.service = model.metadata.info.get("service", "unknown")  # see kit.db.service_base
        metrics.OUTBOX_BACKLOG.watch(self.backlog, service=self.service)
        metrics.OUTBOX_OLDEST_AGE.watch(self.oldest_unsent_age, service=self.service)

    @classmethod
    def from_settings(cls, settings: Any, engine: Engine, model: type[SQLModel], topics: list[str]) -> "Relay":
        return cls(engine, model, settings.bootstrap_servers, topics=topics, partitions=settings.topic_partitions,
                   batch_size=settings.relay_batch_size, idle_s=settings.relay_idle_ms / 1000)

    def _ensure_ready(self) -> None:
        if not self._topics_ready:
            ensure_topics(self.bootstrap_servers, self.topics, self.partitions)
            self._topics_ready = True
        if self._producer is None:
            # every batch ends with a flush, which sends at once whatever waits: a linger longer
            # than a batch takes to add lets the producer build each partition's batch whole on
            # this thread, instead of its sender thread taking a batch as soon as one starts and
            # the next message starting another (measured: 57 against 65 µs of CPU a message)
            self._producer = producer(self.bootstrap_servers, linger_ms=LINGER_MS)

    def backlog(self) -> int:
        t = self.model.__table__
        with Session(self.engine) as s:
            return s.execute(select(func.count()).select_from(t).where(t.c.sent_at.is_(None))).scalar_one()

    def oldest_unsent_age(self) -> float:
        """Seconds since the oldest unsent row was written; 0 when everything was sent."""
        t = self.model.__table__
        with Session(self.engine) as s:
            oldest = s.execute(select(t.c.created_at).where(t.c.sent_at.is_(None)).order_by(t.c.id).limit(1)
                               ).scalar_one_or_none()
        return 0.0 if oldest is None else max(0.0, (datetime.now(timezone.utc) - oldest).total_seconds())

    def drain_once(self) -> int:
        """Publish one batch; returns how many rows were published. Raises on broker failure."""
        with Session(self.engine) as s:
            # several relays on one PostgreSQL database (scale-out workers each run one) share the
            # rows: each takes rows no other holds, until it has marked them, so none is sent twice;
            # on SQLite one relay per file goes on from what it published, marked or not
            shared = s.get_bind().dialect.name == "postgresql"
            messages = self._read(s, shared=shared)
            if not messages:
                if not shared:
                    self._mark_sent(s, wait=False)
                return 0
            if not shared:
                s.commit()  # SQLite: hold no snapshot while publishing (the mark would find it stale)
            acked, acked_topics, failure = self._publish(messages)
            if shared:
                if acked:
                    self._mark(s, acked)
                s.commit()
            elif acked:
                self._published_through = acked[-1]
                self._unmarked += acked
                self._mark_sent(s, wait=len(self._unmarked) >= 20 * self.batch_size)
        for topic, n in acked_topics.items():
            metrics.OUTBOX_PUBLISHED.labels(self.service, topic).inc(n)
        if acked_topics and self.on_published is not None:
            self.on_published(acked_topics)
        if failure is not None:
            self._topics_ready = False  # a restarted in-memory broker has lost its topics
            raise failure
        return len(acked)

    def _read(self, s: Session, *, shared: bool) -> list[Message]:
        """The next batch to publish, in order (`shared`: PostgreSQL, rows locked for this relay)."""
        t = self.model.__table__
        query = (select(t.c.id, t.c.topic, t.c.key, t.c.value, t.c.headers)
                 .where(t.c.sent_at.is_(None)).order_by(t.c.id).limit(self.batch_size))
        if shared:
            query = query.with_for_update(skip_locked=True)
        else:
            query = query.where(t.c.id > self._published_through)
        # outbox_id: increasing per service database and the same on a resend, so a consumer
        # can drop a resent or older copy of a keyed message
        return [Message(row.id, row.topic, row.key.encode(), row.value,
                        [*((k, str(v).encode()) for k, v in orjson.loads(row.headers).items()),
                         ("outbox_id", str(row.id).encode())])
                for row in s.execute(query)]

    def _mark(self, conn: Session | Connection, ids: list[int]) -> None:
        """Record `ids` (acknowledged, in order) as sent, in the caller's transaction."""
        t = self.model.__table__
        for i in range(0, len(ids), 500):
            conn.execute(update(t).where(t.c.id.in_(ids[i:i + 500])).values(sent_at=datetime.now(timezone.utc)))

    def _mark_sent(self, s: Session, *, wait: bool) -> None:
        """SQLite: mark the published rows sent. Unless `wait`, only if the file's write lock is free
        now: intake's committer takes it for every batch, and SQLite's busy handler can leave a
        waiting writer out for seconds, while newly committed rows wait to be published (measured:
        0.4–2.2 s stalls at 500 events/s, docs/performance.md). Rows not marked yet stay pending and
        are marked with a later batch; a restart publishes them again (consumers drop a copy by
        `outbox_id`)."""
        if not self._unmarked:
            return
        s.commit()  # the session's read snapshot ends: the mark is written on a connection of its own
        # one connection throughout: the busy timeout set for the mark must be restored on the same
        # connection before it goes back to the pool (the worker's own writes use the pool too)
        with self.engine.connect() as conn:
            if not wait:
                conn.exec_driver_sql("PRAGMA busy_timeout = 0")
            try:
                self._mark(conn, self._unmarked)
                conn.commit()
                self._unmarked = []
            except OperationalError as exc:
                conn.rollback()
                if wait or "locked" not in str(exc):
                    raise
            finally:
                if not wait:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def _publish(self, messages: list[Message]) -> tuple[list[int], dict[str, int], Exception | None]:
        """Send `messages`; the ids acknowledged in order (up to the first failure), per topic, and the failure."""
        self._ensure_ready()
        futures = [self._producer.send(m.topic, key=m.key, value=m.value, headers=m.headers) for m in messages]
        self._producer.flush(timeout=15)
        acked: list[int] = []
        acked_topics: dict[str, int] = {}
        for fut, m in zip(futures, messages):
            # Only the prefix acknowledged in order is marked: a row after a failure is sent
            # again later, so nothing is lost (consumers dedupe on event_id).
            try:
                fut.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - any failure means "not acknowledged"
                return acked, acked_topics, exc
            acked.append(m.id)
            acked_topics[m.topic] = acked_topics.get(m.topic, 0) + 1
        return acked, acked_topics, None

    def prune(self) -> int:
        """Delete rows sent longer ago than the retention (the event store keeps the events)."""
        t = self.model.__table__
        cutoff = datetime.now(timezone.utc) - self.retention
        with Session(self.engine) as s:
            n = s.execute(delete(t).where(t.c.sent_at.is_not(None), t.c.sent_at < cutoff)).rowcount
            s.commit()
        return n or 0

    def run(self, stop: threading.Event) -> None:
        """Publish until `stop` is set, backing off while the broker is unreachable."""
        backoff = 0.2
        while not stop.is_set():
            try:
                sent = self.drain_once()
                if self.last_error:
                    log.info("broker reachable again; publishing resumed")
                self.last_error, backoff = None, 0.2
                if time.monotonic() - self._last_prune > 600:
                    self.prune()
                    self._last_prune = time.monotonic()
                if sent < self.batch_size:
                    stop.wait(self.idle_s)
            except OperationalError as exc:
                log.warning("publishing paused, database unavailable: %s", exc)
                self.last_error = f"database: {exc}"
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except (KafkaError, OSError) as exc:
                if self.last_error is None:
                    log.warning("publishing paused, broker unreachable: %s", exc)
                self.last_error = str(exc)
                self._reset_producer()
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _reset_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=1)
            except Exception:  # noqa: BLE001 - closing a broken producer may fail; we drop it anyway
                pass
            self._producer = None

    def close(self) -> None:
        if self._unmarked:  # published, not marked yet: marked now, or sent again after a restart
            try:
                with Session(self.engine) as s:
                    self._mark_sent(s, wait=True)
            except OperationalError as exc:
                log.warning("%d published outbox rows not marked sent (%s): they are sent again after a restart",
                            len(self._unmarked), exc)
        if self._producer is not None:
            self._producer.flush(timeout=10)
            self._producer.close(timeout=5)
            self._producer = None
