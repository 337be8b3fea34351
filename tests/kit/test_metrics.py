"""Prometheus metrics: /metrics on every API labelled by route template, the counters moving
where the work happens, consumer lag over the real broker, and a worker's metrics port."""

import signal
import threading
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert
from sqlmodel import Session

from services.intake.app import create_app as intake_app
from services.kit import metrics
from services.kit.broker import free_port
from services.kit.consumer import poll_ordered, run_worker
from services.kit.kafka import ensure_topics, producer
from services.kit.outbox import Relay, dead_letter_row, outbox_row
from services.kit.settings import Settings
from services.notify.app import create_app as notify_app
from services.ranking.app import create_app as ranking_app
from services.ranking.models import Standing
from services.scoring.app import create_app as scoring_app
from services.scoring.base import Outbox
from tests import factories as f
from tests.conftest import bearer, fresh_database
from tests.waiting import wait_for


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(client: TestClient) -> dict[str, list]:
    """GET /metrics without a key, parsed: {sample name: [samples]}."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_every_api_serves_metrics_by_route_template(tmp_path, sqlite_intake, settings, access):
    region, missing = "513431", str(uuid.uuid4())
    with fresh_database("sqlite", tmp_path, "scoring") as scoring_db, \
            fresh_database("sqlite", tmp_path, "ranking") as ranking_db, \
            fresh_database("sqlite", tmp_path, "notify") as notify_db:
        apps = {
            "intake": (intake_app(settings, engine=sqlite_intake.engine), f"/v1/events/{missing}",
                       "/v1/events/{event_id}"),
            "scoring": (scoring_app(settings, engine=scoring_db.engine), f"/v1/scores/{region}?year=2026",
                        "/v1/scores/{region_code}"),
            "ranking": (ranking_app(settings, engine=ranking_db.engine), f"/v1/standings/{region}?year=2026",
                        "/v1/standings/{region_code}"),
            "notify": (notify_app(settings, engine=notify_db.engine), f"/v1/webhooks/endpoints/{missing}",
                       "/v1/webhooks/endpoints/{endpoint_id}"),
        }
        with Session(ranking_db.engine) as s:  # the newest standing changed 30 s ago
            s.add(Standing(scope="513400", level="county", league="in_poverty", year=2026, region_code=region, rank=1,
                           total=90.0, grade="good", changed_at=datetime.now(timezone.utc) - timedelta(seconds=30)))
            s.commit()
        for service, (app, url, template) in apps.items():
            assert "/metrics" not in app.openapi()["paths"]  # out of the schema (and of the auth checks)
            with TestClient(app) as client:  # /metrics needs no key, like /healthz
                status = client.get(url, headers=bearer(access.admin)).status_code
                assert client.get(f"/no/such/{missing}").status_code == 404
                samples = scraped(client)
            requests = {(s.labels["route"], s.labels["status"]) for s in samples["kaohe_http_requests_total"]
                        if s.labels["service"] == service and s.labels["method"] == "GET"}
            assert (template, str(status)) in requests, (service, requests)
            assert (metrics.UNMATCHED, "404") in requests
            assert not any(missing in route for route, _ in requests)  # never a raw path
            assert any(s.labels["route"] == template and s.labels["le"] == "+Inf" and s.value >= 1
                       for s in samples["kaohe_http_request_duration_seconds_bucket"]
                       if s.labels["service"] == service)
            if service == "ranking":
                (age,) = samples["kaohe_ranking_newest_standing_age_seconds"]
                assert 30 <= age.value < 60


def test_intake_counts_what_it_stored(sqlite_intake, settings, access):
    accepted = ("kaohe_intake_events_accepted_total", {"type": "inspection.recorded"})
    conflicts = ("kaohe_intake_events_rejected_total", {"status": "409"})
    before = value(accepted[0], **accepted[1]), value(conflicts[0], **conflicts[1])
    event = f.inspection(f.finding())
    with TestClient(intake_app(settings, engine=sqlite_intake.engine), headers=access.headers) as client:
        assert client.post("/v1/events", json=event).status_code == 201
        assert client.post("/v1/events", json=event).status_code == 200  # a duplicate is not counted again
        changed = {**event, "source": "another"}
        assert client.post("/v1/events", json=changed).status_code == 409
    assert value(accepted[0], **accepted[1]) == before[0] + 1
    assert value(conflicts[0], **conflicts[1]) == before[1] + 1


def test_dead_letters_are_counted_by_source_topic():
    message = SimpleNamespace(topic="kaohe.test.source", partition=2, offset=7, key=b"513431", value=b"{", headers=[])
    before = value("kaohe_dead_letters_total", topic="kaohe.test.source")
    row = dead_letter_row(Outbox, message, "not JSON", datetime.now(timezone.utc))
    assert row["topic"] == "kaohe.test.source.dlt"
    assert value("kaohe_dead_letters_total", topic="kaohe.test.source") == before + 1


@pytest.mark.broker
def test_consumer_lag_per_partition_after_a_poll(broker):
    topic = f"kaohe.test.lag.{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap_servers, [topic], 2)
    p = producer(broker.bootstrap_servers)
    for i in range(5):
        p.send(topic, key=b"k", value=str(i).encode(), partition=1)
    p.flush()
    p.close()
    group = f"kaohe-test-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="none")
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = wait_for(lambda: poll_ordered(consumer, batch=2), timeout=20, what="a first poll with messages")
        assert len(got) == 2
        assert value("kaohe_consumer_lag", group=group, topic=topic, partition="1") == 3  # 5 on the log, 2 read
        assert value("kaohe_consumer_messages_total", group=group, topic=topic) == 2
        read = len(got)
        while read < 5:
            read += len(poll_ordered(consumer, batch=2))
        assert value("kaohe_consumer_lag", group=group, topic=topic, partition="1") == 0
        assert value("kaohe_consumer_messages_total", group=group, topic=topic) == 5
    finally:
        consumer.close()


@pytest.mark.broker
def test_relay_backlog_and_published(tmp_path, broker):
    topic = f"kaohe.test.relay.{uuid.uuid4().hex[:8]}"  # not scoring's topic: other tests read that one
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        relay = Relay(db.engine, Outbox, broker.bootstrap_servers, topics=[topic], partitions=1)
        now = datetime.now(timezone.utc)
        with db.engine.begin() as conn:
            conn.execute(insert(Outbox.__table__), [
                outbox_row(Outbox, topic=topic, key="513431", value=b"{}", headers={}, now=now) for _ in range(2)])
        published = value("kaohe_outbox_published_total", service="scoring", topic=topic)
        try:
            assert value("kaohe_outbox_backlog", service="scoring") == 2  # read at scrape time
            assert value("kaohe_outbox_oldest_unsent_age_seconds", service="scoring") >= 0
            assert relay.drain_once() == 2
            assert value("kaohe_outbox_backlog", service="scoring") == 0
            assert value("kaohe_outbox_oldest_unsent_age_seconds", service="scoring") == 0
            assert value("kaohe_outbox_published_total", service="scoring", topic=topic) == published + 2
        finally:
            relay.close()


def test_a_scrape_gauge_skips_a_source_that_fails_or_is_gone():
    gauge = metrics.ScrapeGauge("kaohe_test_scrape", "test", ["part"], registry=SimpleNamespace(register=id))

    class Source:
        def read(self) -> float:
            return 4.0

    source = Source()
    gauge.watch(source.read, part="kept")
    gauge.watch(lambda: 1 / 0, part="broken")
    gauge.watch(lambda: None, part="unknown")
    assert [(s.labels, s.value) for s in gauge.collect()[0].samples] == [({"part": "kept"}, 4.0)]
    del source  # held weakly: a dropped relay or app does not stay alive for its gauge
    assert gauge.collect()[0].samples == []


def test_worker_metrics_port(tmp_path):
    defaults = Settings(data_dir=tmp_path)
    assert [defaults.metrics_port_for(p) for p in ("intake-relay", "scoring-worker", "ranking-worker",
                                                   "notify-worker")] == [9101, 9102, 9103, 9104]
    assert Settings(data_dir=tmp_path, metrics_port=0).metrics_port_for("scoring-worker") is None
    port = free_port()
    seen: dict[str, str] = {}

    class Worker:
        settings = Settings(data_dir=tmp_path, metrics_port=port)

        def run(self, stop: threading.Event) -> None:
            seen["body"] = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

        def close(self) -> None:
            pass

    class Relay:
        def run(self, stop: threading.Event) -> None:
            stop.wait(5)

        def close(self) -> None:
            pass

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        run_worker("scoring", Worker(), Relay())
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert "kaohe_consumer_messages_total" in seen["body"] and "kaohe_scoring_events_total" in seen["body"]
    with pytest.raises(httpx.ConnectError):  # stopped with the worker
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
