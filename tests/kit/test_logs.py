"""Structured logs: JSON lines with the request and event ids; X-Request-ID in and out; the ids
carried across a Kafka hop (request → intake's event store → relay → broker → a consumer's context)."""

import io
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from types import SimpleNamespace

import orjson
import pytest
from fastapi.testclient import TestClient

from services.events import topics
from services.intake.app import create_app as intake_app
from services.intake.relay import build as build_relay
from services.kit.logs import JsonFormatter, _Ids, bound, current_ids, in_message_context, message_context
from services.kit.outbox import outbox_row
from services.kit.settings import Settings
from services.scoring.base import Outbox
from tests import factories as f
from tests.kafka_helpers import headers, read_topic

GENERATED = re.compile(r"[0-9a-f]{32}")


class Lines:
    """What a logger wrote through the JSON formatter, parsed line by line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def __call__(self) -> list[dict]:
        return [orjson.loads(line) for line in self.stream.getvalue().splitlines()]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """Root logging through the JSON formatter and id filter, as `configure()` sets it up."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_Ids())
    handler.setFormatter(JsonFormatter("test"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield Lines(stream)
    root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_ids(json_lines):
    log = logging.getLogger("kaohe.test")
    with bound(request_id="req-1", event_id="ev-1"):
        log.info("scored %d events", 3, extra={"region_code": "513431"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = json_lines()
    assert first["message"] == "scored 3 events" and first["level"] == "INFO" and first["logger"] == "kaohe.test"
    assert first["request_id"] == "req-1" and first["event_id"] == "ev-1" and first["region_code"] == "513431"
    assert first["service"] == "test"
    assert datetime.fromisoformat(first["time"].replace("Z", "+00:00")).tzinfo == timezone.utc
    assert "request_id" not in second and "ValueError: boom" in second["exc"]  # the block's ids are gone


def test_bound_restores_the_outer_ids_after_an_error():
    with bound(request_id="outer", event_id="ev-outer"):
        with pytest.raises(ValueError), bound(event_id="ev-inner", request_id=None):
            assert current_ids() == {"event_id": "ev-inner"}  # None clears the request id
            raise ValueError("boom")
        assert current_ids() == {"request_id": "outer", "event_id": "ev-outer"}
    assert current_ids() == {}


def test_request_id_is_echoed_logged_or_replaced(sqlite_intake, settings, access, json_lines):
    with TestClient(intake_app(settings, engine=sqlite_intake.engine), headers=access.headers) as client:
        r = client.get("/v1/regions/513400", headers={"X-Request-ID": "partner-42:abc"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "partner-42:abc"
        for hostile in ("x" * 200, "two words", "é".encode(), "", "a\tb"):
            got = client.get("/v1/regions/513400", headers={"X-Request-ID": hostile}).headers["x-request-id"]
            assert GENERATED.fullmatch(got), (hostile, got)
        assert GENERATED.fullmatch(client.get("/nowhere").headers["x-request-id"])  # a 404 gets one too
    (line,) = [x for x in json_lines() if x["logger"] == "kaohe.access" and x["request_id"] == "partner-42:abc"]
    assert line["route"] == "/v1/regions/{code}" and line["status"] == 200 and line["method"] == "GET"
    assert line["path"] == "/v1/regions/513400" and line["duration_ms"] >= 0
    assert line["message"].startswith("GET /v1/regions/{code} 200 ")


def test_message_context_sets_and_clears_the_ids():
    message = SimpleNamespace(headers=[("request_id", b"r-1"), ("event_id", b"e-1"), ("type", b"x")])
    with message_context(message):
        assert current_ids() == {"request_id": "r-1", "event_id": "e-1"}
        row = outbox_row(Outbox, topic="t", key="k", value=b"", headers={"event_id": "mine"}, now=datetime.now())
        assert orjson.loads(row["headers"]) == {"request_id": "r-1", "event_id": "mine"}  # the caller's wins
        with message_context(SimpleNamespace(headers=[("request_id", b"bad id\n")])):
            assert current_ids() == {}  # nothing leaks from the previous message; a bad id is dropped
    assert current_ids() == {}
    seen = [current_ids() for _ in in_message_context([message, SimpleNamespace(headers=[("event_id", b"e-2")])])]
    assert seen == [{"request_id": "r-1", "event_id": "e-1"}, {"event_id": "e-2"}] and current_ids() == {}
    message_context(message)  # as a plain call: set until the next message
    assert current_ids() == {"request_id": "r-1", "event_id": "e-1"}
    message_context(SimpleNamespace(headers=None))
    assert current_ids() == {}


@pytest.mark.broker
def test_request_id_travels_through_intake_to_kafka(sqlite_intake, tmp_path, access, broker, json_lines):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers, topic_partitions=3)
    relay = build_relay(settings, engine=sqlite_intake.engine)
    event = f.inspection(f.finding())
    batch = [f.daily_check(), f.daily_check()]
    try:
        with TestClient(intake_app(settings, engine=sqlite_intake.engine), headers=access.headers) as client:
            r = client.post("/v1/events", json=event, headers={"X-Request-ID": "field-app-7f3"})
            assert r.status_code == 201 and r.headers["x-request-id"] == "field-app-7f3"
            r = client.post("/v1/events/batch", json={"events": batch}, headers={"X-Request-ID": "batch-9"})
            assert r.json()["accepted"] == 2
        while relay.drain_once():
            pass
    finally:
        relay.close()
    ids = {event["event_id"]: "field-app-7f3", **{e["event_id"]: "batch-9" for e in batch}}
    messages = {orjson.loads(m.value)["event_id"]: m
                for m in read_topic(broker.bootstrap_servers, topics.INTAKE_EVENTS, until_ids=set(ids))}
    for event_id, request_id in ids.items():
        assert headers(messages[event_id])["request_id"] == request_id
        assert headers(messages[event_id])["event_id"] == event_id
    # the consuming side: a worker's logs for that message carry both ids
    with message_context(messages[event["event_id"]]):
        logging.getLogger("kaohe.test.worker").info("applied")
    (line,) = [x for x in json_lines() if x["logger"] == "kaohe.test.worker"]
    assert line["request_id"] == "field-app-7f3" and line["event_id"] == event["event_id"]
