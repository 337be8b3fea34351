"""POST /v1/events/batch: each item judged on its own, in order."""

import uuid

import orjson
import pytest
from sqlalchemy import select, text
from sqlmodel import Session

from services.events import registry
from services.intake.api.schemas import BatchOut
from services.intake.regions.service import Directory
from services.intake.store.keyset import array_text, custom_plans, members
from services.intake.store.models import NaturalKey, StoredEvent
from services.intake.store.service import append_many
from tests import factories as f


def test_batch_with_good_and_bad_items(client):
    good = f.finding()
    items = [
        f.inspection(good),                                                 # 0 accepted
        f.step("rectification.reported", good["finding_id"]),                # 1 builds on item 0
        {**f.inspection(), "region_code": "999999"},                        # 2 unknown county → 422
        f.step("rectification.verified", "F-UNKNOWN"),                      # 3 unknown finding → 409
        "not an object",                                                    # 4 → 422
        {**f.daily_check(), "type": "daily_check.exploded"},                # 5 unknown type → 422
    ]
    items.append(dict(items[0]))                                            # 6 duplicate of 0
    items.append({**items[1], "source": "changed"})                         # 7 same id, other content → 409
    r = client.post("/v1/events/batch", json={"events": items})
    assert r.status_code == 200, r.text
    body = r.json()
    statuses = [x["status"] for x in body["results"]]
    assert statuses == ["accepted", "accepted", "rejected", "rejected", "rejected", "rejected", "duplicate", "rejected"]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 1, 5)
    problems = {x["index"]: x["problem"] for x in body["results"] if x["problem"]}
    assert problems[2]["status"] == 422 and problems[2]["errors"][0]["field"] == "region_code"
    assert problems[3]["status"] == 409
    assert problems[4]["status"] == 422
    assert problems[5]["errors"][0]["field"] == "type"
    assert problems[7]["status"] == 409
    assert body["results"][6]["sequence"] == body["results"][0]["sequence"] == 1
    stored = client.get("/v1/events").json()["items"]
    assert [e["event_id"] for e in stored] == [items[0]["event_id"], items[1]["event_id"]]
    assert client.get(f"/v1/findings/{f.COUNTY}/{good['finding_id']}").json()["state"] == "reported"
    # the answer is written as plain JSON: it must be what the documented model makes of it, no more
    assert r.headers["content-type"] == "application/json"
    assert BatchOut.model_validate(body).model_dump(mode="json") == body
    step_again = client.post("/v1/events/batch", json={"events": [
        f.step("rectification.reported", good["finding_id"])]}).json()  # reported twice: facts of the state
    assert BatchOut.model_validate(step_again).model_dump(mode="json") == step_again
    assert step_again["results"][0]["problem"]["current_state"] == "reported"


def test_a_lone_surrogate_in_an_item_refuses_the_body(client):
    """Regression: an event id sent as "\\ud800" (valid JSON, no text) was named in the answer, whose
    encoding then failed: a 500. The body is refused before any item is judged."""
    body = b'{"events": [' + orjson.dumps(f.daily_check()) + b', {"event_id": "\\ud800", "type": "x"}]}'
    r = client.post("/v1/events/batch", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert [(e["field"], e["type"]) for e in r.json()["errors"]] == [("events.1.event_id", "string_surrogate")]
    assert client.get("/v1/events").json()["items"] == []


def test_rejected_item_in_the_middle_leaves_no_trace(client):
    dup = f.finding()
    items = [f.inspection(f.finding(), f.finding(dup["finding_id"])), f.inspection(dup)]  # 2nd reuses a finding id
    body = client.post("/v1/events/batch", json={"events": items}).json()
    assert [x["status"] for x in body["results"]] == ["accepted", "rejected"]
    # the rejected inspection's natural key was not taken: its inspection_id can still be used
    retry = f.inspection(f.finding())
    retry["payload"]["inspection_id"] = items[1]["payload"]["inspection_id"]
    assert client.post("/v1/events", json=retry).status_code == 201


def test_batch_limits(client):
    assert client.post("/v1/events/batch", json={"events": []}).status_code == 422
    too_many = client.post("/v1/events/batch", json={"events": [f.daily_check() for _ in range(1001)]})
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "events"
    assert client.post("/v1/events/batch", json=[f.daily_check()]).status_code == 422
    assert client.get("/v1/events").json()["items"] == []


def test_full_batch_of_1000_is_accepted_in_order(client):
    items = [f.daily_check(region=("513431", "510722")[i % 2]) for i in range(1000)]
    body = client.post("/v1/events/batch", json={"events": items}).json()
    assert body["accepted"] == 1000
    assert [x["sequence"] for x in body["results"]] == list(range(1, 1001))


def test_a_duplicate_of_an_older_event_does_not_move_the_head(client):
    """Regression: a batch that re-sends an older event and adds new ones continues the sequence."""
    first = [client.post("/v1/events", json=f.daily_check()).json() for _ in range(3)]
    old = {k: v for k, v in first[0].items() if k not in ("recorded_at", "sequence")}
    body = client.post("/v1/events/batch", json={"events": [old, f.daily_check(), f.daily_check()]}).json()
    assert [(x["status"], x["sequence"]) for x in body["results"]] == [("duplicate", 1), ("accepted", 4),
                                                                        ("accepted", 5)]
    assert client.post("/v1/events", json=old).status_code == 200
    assert client.post("/v1/events", json=f.daily_check()).json()["sequence"] == 6
    assert client.get("/v1/audit/verify").json()["ok"] is True


def test_postgresql_append_plans_its_look_ups_for_their_keys(database):
    """A generic plan kept from when the tables were small made each look-up read a whole kind of
    natural keys (docs/performance.md): the append transaction asks for custom plans, and only it."""
    if database.backend != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    items = [registry.parse(f.daily_check()) for _ in range(3)]
    with Session(database.engine) as session:
        outcomes = append_many(session=session, items=items, directory=Directory(database.engine))
        assert [o.status for o in outcomes] == ["accepted"] * 3
        assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "force_custom_plan"
        session.commit()
        assert session.execute(text("SHOW plan_cache_mode")).scalar_one() == "auto"


def test_postgresql_reads_a_key_list_as_sent(database):
    """The look-ups send their keys as one array literal (keyset.array_text): whatever a key holds,
    PostgreSQL reads back the same keys, as text and as UUIDs."""
    if database.backend != "postgresql":
        pytest.skip("a PostgreSQL array literal")
    keys = ['plain', 'with "quotes"', "back\\slash\\", "a,b", "{braces}", "NULL", "null", " spaced ", "",
            "检查-001", "tab\tand\nnewline", "'single'"]
    ids = [uuid.uuid4() for _ in range(3)]
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT CAST(:k AS text[])"), {"k": array_text(keys)}).scalar_one() == keys
        assert conn.execute(text("SELECT CAST(:k AS uuid[])"), {"k": array_text(ids)}).scalar_one() == ids


def test_postgresql_plans_a_key_list_as_one_constant(database):
    """The array literal is sent untyped, so the plan holds the keys as one constant array; sent as
    text, the cast to the array type would be evaluated for every row compared (measured: seconds
    for a 1,000-event batch against 30,000 stored events)."""
    if database.backend != "postgresql":
        pytest.skip("a PostgreSQL plan")
    with Session(database.engine) as session:
        custom_plans(session)
        for column, keys in ((StoredEvent.event_id, [uuid.uuid4(), uuid.uuid4()]), (NaturalKey.key, ["a", "b"])):
            (condition,) = members(session, column, keys)
            compiled = select(column).where(condition).compile(dialect=database.engine.dialect)
            plan = "\n".join(r[0] for r in session.connection().exec_driver_sql(f"EXPLAIN {compiled}",
                                                                              compiled.params))
            assert "= ANY ('{" + ",".join(map(str, keys)) + "}'::" in plan, plan  # as PostgreSQL prints it
