"""kit.outbox.Relay on SQLite: publishing does not wait for the file's write lock (the service's
writer may hold it for every batch); the mark follows when the lock is free, and a restart re-sends
only what was never marked. (Scoring's outbox here; intake's relay, which reads the event store,
is tested in tests/intake/test_publish.py.)"""

import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert, select
from sqlmodel import Session

from services.kit.db import BUSY_TIMEOUT_MS
from services.kit.outbox import Relay, outbox_row
from services.scoring.base import Outbox
from tests.conftest import Database, fresh_database
from tests.kafka_helpers import read_messages

pytestmark = pytest.mark.broker


@pytest.fixture
def sqlite_scoring(tmp_path) -> Iterator[Database]:
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        yield db


def add_rows(engine, topic: str, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Outbox.__table__), [outbox_row(Outbox, topic=topic, key="513431", value=b"{}", headers={},
                                                           now=datetime.now(timezone.utc)) for _ in range(n)])


def unsent(engine) -> int:
    with Session(engine) as s:
        return len(s.execute(select(Outbox.id).where(Outbox.sent_at.is_(None))).all())


def test_rows_are_published_while_another_writer_holds_the_lock_and_marked_afterwards(sqlite_scoring, broker):
    topic = f"kaohe.test.relay.{uuid.uuid4().hex[:8]}"
    engine = sqlite_scoring.engine
    relay = Relay(engine, Outbox, broker.bootstrap_servers, topics=[topic], partitions=1)
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        add_rows(engine, topic, 2)
        holder.execute("BEGIN IMMEDIATE")  # another writer (intake's committer) has the write lock
        started = time.monotonic()
        assert relay.drain_once() == 2
        assert time.monotonic() - started < 10  # not the 30 s busy timeout
        assert len(read_messages(broker.bootstrap_servers, topic, lambda m: len(m) >= 2)) == 2
        assert unsent(engine) == 2  # published, not marked: the lock is still held
        assert relay.drain_once() == 0  # nothing sent twice meanwhile
        # the mark ran with no busy timeout: every pooled connection has its timeout back
        connections = [engine.connect() for _ in range(5)]
        try:
            assert {c.exec_driver_sql("PRAGMA busy_timeout").scalar() for c in connections} == {BUSY_TIMEOUT_MS}
        finally:
            for c in connections:
                c.close()
        holder.execute("ROLLBACK")
        assert relay.drain_once() == 0 and unsent(engine) == 0  # marked once the lock was free
    finally:
        holder.close()
        relay.close()
    assert len(read_messages(broker.bootstrap_servers, topic, lambda m: len(m) >= 2)) == 2


def test_a_restart_resends_only_what_was_published_and_never_marked(sqlite_scoring, broker):
    topic = f"kaohe.test.relay.{uuid.uuid4().hex[:8]}"
    engine = sqlite_scoring.engine
    first = Relay(engine, Outbox, broker.bootstrap_servers, topics=[topic], partitions=1)
    add_rows(engine, topic, 3)
    assert first.drain_once() == 3 and unsent(engine) == 0
    add_rows(engine, topic, 1)
    holder = sqlite3.connect(engine.url.database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert first.drain_once() == 1  # published; the mark could not be written
        first._producer.close()  # the process dies: no close(), nothing more marked
        first._producer = None
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    second = Relay(engine, Outbox, broker.bootstrap_servers, topics=[topic], partitions=1)
    try:
        assert second.drain_once() == 1 and unsent(engine) == 0
    finally:
        second.close()
    messages = read_messages(broker.bootstrap_servers, topic, lambda m: len(m) >= 5)
    ids = [dict(m.headers)["outbox_id"] for m in messages]
    assert len(ids) == 5 and len(set(ids)) == 4  # the unmarked row twice, under the same outbox_id
