"""Publishing over a real broker: what arrives, and zero loss across broker outages."""

import os
import signal
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from services.events import topics
from services.intake.app import create_app
from services.intake.relay import build as build_relay
from services.kit.settings import Settings
from tests import factories as f
from tests.kafka_helpers import headers, read_topic

pytestmark = pytest.mark.broker
COUNTIES = ["513431", "513432", "510722", "511602"]


@pytest.fixture
def wired(database, tmp_path, access, clock, broker):
    """Intake app + relay on the session's broker."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers,
                        service_token=access.admin, topic_partitions=3, relay_idle_ms=10)
    relay = build_relay(settings, engine=database.engine)
    with TestClient(create_app(settings, engine=database.engine, clock=clock), headers=access.headers) as client:
        yield client, relay, settings
    relay.close()


def drain(relay) -> None:
    while relay.drain_once():
        pass


def test_accepted_event_arrives_keyed_by_county_with_the_stored_content(wired, broker):
    client, relay, _ = wired
    event = f.inspection(f.finding())
    response = client.post("/v1/events", json=event)
    record = response.json()
    assert client.get("/readyz").json()["outbox_backlog"] == 1
    drain(relay)
    assert client.get("/readyz").json()["outbox_backlog"] == 0
    (message,) = [m for m in read_topic(broker.bootstrap_servers, topics.INTAKE_EVENTS, until_ids={record["event_id"]})
                  if orjson.loads(m.value)["event_id"] == record["event_id"]]
    assert message.key == b"513431"
    assert orjson.loads(message.value) == record
    assert headers(message) == {"event_id": record["event_id"], "type": "inspection.recorded", "schema_version": "1",
                                "sequence": str(record["sequence"]), "outbox_id": headers(message)["outbox_id"],
                                "request_id": response.headers["x-request-id"]}  # the request that sent it
    assert int(headers(message)["outbox_id"]) > 0
    assert message.value + b"\n" == client.get("/v1/events/export",
                                               params={"after_sequence": record["sequence"] - 1}).content


def test_duplicates_and_rejections_publish_nothing(wired, broker):
    client, relay, _ = wired
    event = f.inspection()
    client.post("/v1/events", json=event)
    client.post("/v1/events", json=event)  # duplicate
    client.post("/v1/events", json={**event, "source": "x"})  # 409
    client.post("/v1/events", json=f.inspection(region="999999"))  # 422
    assert client.get("/readyz").json()["outbox_backlog"] == 1
    drain(relay)
    published = read_topic(broker.bootstrap_servers, topics.INTAKE_EVENTS, until_ids={event["event_id"]})
    assert sum(orjson.loads(m.value)["event_id"] == event["event_id"] for m in published) == 1


def _post_stream(client, n, accepted):
    for i in range(n):
        event = f.daily_check(region=COUNTIES[i % len(COUNTIES)])
        r = client.post("/v1/events", json=event)
        assert r.status_code == 201, r.text
        accepted.append(r.json())


def _assert_all_in_order(messages, accepted):
    first_seen: dict[str, list[int]] = defaultdict(list)
    ids = set()
    for m in messages:
        value = orjson.loads(m.value)
        assert m.key.decode() == value["region_code"]
        if value["event_id"] not in ids:
            ids.add(value["event_id"])
            first_seen[value["region_code"]].append(value["sequence"])
    assert ids >= {a["event_id"] for a in accepted}
    for county, sequences in first_seen.items():
        assert sequences == sorted(sequences), f"{county}: events out of order"


def _wait_backlog_zero(relay, timeout=90):
    deadline = time.monotonic() + timeout
    while relay.backlog() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert relay.backlog() == 0, "outbox not drained after the broker came back"


@pytest.fixture
def live(database, tmp_path, access, clock, own_broker):
    """Intake app + its relay running in the background (as its own process would), on own_broker."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                        service_token=access.admin, relay_idle_ms=10)
    relay = build_relay(settings, engine=database.engine)
    stop = threading.Event()
    worker = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    worker.start()
    try:
        with TestClient(create_app(settings, engine=database.engine, clock=clock), headers=access.headers) as client:
            yield client, relay
    finally:
        stop.set()
        worker.join(60)
        relay.close()


def test_broker_frozen_then_back_loses_nothing(live, own_broker):
    """SIGSTOP the broker (it stops answering but keeps its data): intake keeps accepting,
    /readyz says the broker is unreachable, and afterwards everything is there, in order."""
    client, relay = live
    accepted: list[dict] = []
    _post_stream(client, 40, accepted)
    _wait_backlog_zero(relay)
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    time.sleep(2.5)  # let /readyz's cached probe expire
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert ready.json()["checks"]["broker"] != "ok" and ready.json()["checks"]["database"] == "ok"
    _post_stream(client, 60, accepted)  # accepted while the broker is down
    assert client.get("/readyz").json()["outbox_backlog"] > 0
    os.kill(own_broker.process.pid, signal.SIGCONT)
    _wait_backlog_zero(relay)
    time.sleep(2.5)
    assert client.get("/readyz").status_code == 200
    messages = read_topic(own_broker.bootstrap_servers, topics.INTAKE_EVENTS,
                          until_ids={a["event_id"] for a in accepted}, timeout=60)
    _assert_all_in_order(messages, accepted)


def test_broker_killed_and_restarted_gets_every_event_accepted_meanwhile(live, own_broker):
    """Kill the broker: intake keeps accepting; a new broker on the same port (empty: tansu keeps
    memory only) receives every event accepted during the outage, topics re-created, in order."""
    client, relay = live
    before: list[dict] = []
    during: list[dict] = []
    _post_stream(client, 20, before)
    _wait_backlog_zero(relay)
    own_broker.stop()
    _post_stream(client, 50, during)
    time.sleep(2.5)
    assert relay.backlog() == 50  # nothing is marked sent while no broker acknowledges it
    assert client.get("/readyz").status_code == 503
    own_broker.start()
    _wait_backlog_zero(relay)
    messages = read_topic(own_broker.bootstrap_servers, topics.INTAKE_EVENTS,
                          until_ids={a["event_id"] for a in during}, timeout=60)
    _assert_all_in_order(messages, during)


def test_a_new_relay_goes_on_from_the_stored_position(wired, database, broker):
    """The relay stores how far it published: another relay (a restart) publishes only what came
    after it, and a relay that published without storing it (killed) is repeated from there only."""
    client, first, settings = wired
    sent = [client.post("/v1/events", json=f.daily_check(region=c)).json() for c in COUNTIES[:3]]
    assert first.drain_once() == 3
    first.close()  # stores the position on the way out (SQLite: if it could not at once)
    assert client.get("/readyz").json()["outbox_backlog"] == 0
    later = client.post("/v1/events", json=f.daily_check()).json()
    second = build_relay(settings, engine=database.engine)
    try:
        assert second.drain_once() == 1 and second.drain_once() == 0  # the fourth event only
        second._producer.close()  # killed before it stored anything more than it has
        second._producer = None
    finally:
        second._unmarked = []
        second.close()
    messages = read_topic(broker.bootstrap_servers, topics.INTAKE_EVENTS,
                          until_ids={e["event_id"] for e in [*sent, later]})
    mine = [orjson.loads(m.value)["sequence"] for m in messages
            if orjson.loads(m.value)["event_id"] in {e["event_id"] for e in [*sent, later]}]
    assert sorted(mine) == sorted(e["sequence"] for e in [*sent, later])  # each once
    assert all(headers(m)["outbox_id"] == headers(m)["sequence"] for m in messages
               if orjson.loads(m.value)["event_id"] == later["event_id"])


def test_two_relays_on_postgresql_publish_each_event_once(database, tmp_path, access, clock, own_broker):
    """Scale-out safety: two intake relays on one PostgreSQL database, running at once while events
    arrive, take turns on the position's row lock; every event is on the topic exactly once."""
    if database.backend != "postgresql":
        pytest.skip("one relay per SQLite file: this is about relays sharing a PostgreSQL database")
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                        service_token=access.admin, relay_idle_ms=5, relay_batch_size=7)
    relays = [build_relay(settings, engine=database.engine) for _ in range(2)]
    published = [0, 0]
    for i, relay in enumerate(relays):
        relay.on_published = lambda counts, i=i: published.__setitem__(i, published[i] + sum(counts.values()))
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in relays]
    for t in threads:
        t.start()
    accepted: list[dict] = []
    try:
        with TestClient(create_app(settings, engine=database.engine, clock=clock), headers=access.headers) as client:
            for _ in range(6):
                body = {"events": [f.daily_check(region=COUNTIES[j % 4]) for j in range(20)]}
                results = client.post("/v1/events/batch", json=body).json()["results"]
                accepted += [r for r in results if r["status"] == "accepted"]
                _post_stream(client, 5, accepted)
            _wait_backlog_zero(relays[0])
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for r in relays:
            r.close()
    assert len(accepted) == 150
    assert all(published) and sum(published) == 150, published  # both took turns, nothing twice
    ids = [orjson.loads(m.value)["event_id"] for m in read_topic(
        own_broker.bootstrap_servers, topics.INTAKE_EVENTS, until_ids={a["event_id"] for a in accepted})]
    assert len(ids) == len(set(ids)) == 150


def test_an_idle_relay_on_postgresql_writes_nothing(wired, database):
    """With nothing to publish the relay takes no row lock: on PostgreSQL a lock marks the row
    (its xmax) and makes the poll a write transaction, 20 times a second at the default pace."""
    if database.backend != "postgresql":
        pytest.skip("SQLite's relay reads without a lock")
    client, relay, _ = wired
    client.post("/v1/events", json=f.daily_check())
    assert relay.drain_once() == 1

    def locker() -> str:  # the transaction that last locked or updated the row
        with database.engine.connect() as conn:
            return conn.execute(text("SELECT xmax::text FROM published")).scalar_one()

    marked = locker()
    for _ in range(5):
        assert relay.drain_once() == 0
    assert locker() == marked  # no poll locked it since


def test_the_relay_gauges_count_the_events_not_yet_published(wired, clock):
    """kaohe_outbox_backlog and kaohe_outbox_oldest_unsent_age_seconds for intake, read from the
    store at scrape time: the events past the relay's position, and the age of the first of them."""
    client, relay, _ = wired  # the relay built last: its reads are the gauges' (kit.metrics.watch)
    clock.now = datetime.now(timezone.utc) - timedelta(hours=1)  # the events stored an hour ago

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"service": "intake"})

    drain(relay)
    assert value("kaohe_outbox_backlog") == 0 and value("kaohe_outbox_oldest_unsent_age_seconds") == 0
    client.post("/v1/events", json=f.daily_check())
    client.post("/v1/events", json=f.daily_check())
    assert value("kaohe_outbox_backlog") == 2
    assert 3500 < value("kaohe_outbox_oldest_unsent_age_seconds") < 4000
    drain(relay)
    assert value("kaohe_outbox_backlog") == 0 and value("kaohe_outbox_oldest_unsent_age_seconds") == 0
