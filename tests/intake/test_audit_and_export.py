"""Tamper evidence (hash chain) and the ordered NDJSON export."""

import orjson
from sqlalchemy import text

from services.events.registry import decode_record
from tests import factories as f


def seed(client, n=5):
    return [client.post("/v1/events", json=f.inspection(f.finding())).json() for _ in range(n)]


def test_chain_verifies(client):
    seed(client)
    report = client.get("/v1/audit/verify").json()
    assert report["ok"] is True and report["events_checked"] == 5 and report["head_sequence"] == 5
    assert report["first_broken"] is None


def test_empty_store_verifies(client):
    assert client.get("/v1/audit/verify").json() == {
        "ok": True, "events_checked": 0, "head_sequence": 0, "head_hash": "0" * 64, "first_broken": None}


def test_editing_a_payload_behind_the_services_back_is_detected(client, database):
    records = seed(client)
    victim = records[2]
    body = orjson.loads(orjson.dumps({k: v for k, v in victim.items() if k not in ("recorded_at", "sequence")}))
    body["payload"]["findings"][0]["severity"] = "minor"
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE event SET body = :b WHERE sequence = 3"),
                     {"b": orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()})
    report = client.get("/v1/audit/verify").json()
    assert report["ok"] is False
    assert report["first_broken"]["sequence"] == 3
    assert report["first_broken"]["event_id"] == victim["event_id"]
    assert report["events_checked"] == 2


def test_editing_an_indexed_column_or_deleting_a_row_is_detected(client, database):
    seed(client)
    with database.engine.begin() as conn:
        conn.execute(text("UPDATE event SET region_code = '510722' WHERE sequence = 4"))
    assert client.get("/v1/audit/verify").json()["first_broken"]["sequence"] == 4
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM event WHERE sequence = 2"))
    broken = client.get("/v1/audit/verify").json()["first_broken"]
    assert broken["sequence"] == 2 and "missing" in broken["reason"]


def test_export_is_the_whole_store_in_order(client):
    records = seed(client, 7)
    lines = client.get("/v1/events/export").content.splitlines()
    assert [orjson.loads(line) for line in lines] == records
    parsed = [decode_record(line) for line in lines]
    assert [p.sequence for p in parsed] == list(range(1, 8))
    assert str(parsed[0].event.event_id) == records[0]["event_id"]
    tail = client.get("/v1/events/export", params={"after_sequence": 5})
    assert tail.headers["content-type"].startswith("application/x-ndjson")
    assert [orjson.loads(line)["sequence"] for line in tail.content.splitlines()] == [6, 7]


def test_export_pages_through_large_stores(client):
    from services.intake.store.service import export

    client.post("/v1/events/batch", json={"events": [f.daily_check() for _ in range(1000)]})
    engine = client.app.state.engine
    chunks = list(export(engine, after_sequence=0, page_size=300))
    assert len(chunks) == 4
    sequences = [orjson.loads(line)["sequence"] for c in chunks for line in c.splitlines()]
    assert sequences == list(range(1, 1001))
