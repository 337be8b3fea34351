"""POST /v1/events: acceptance, idempotency, and every 422 case."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest

from tests import factories as f
from tests.factories import COUNTY, T0

PROBLEM = "application/problem+json"


def fields(response) -> set[str]:
    assert response.headers["content-type"].startswith(PROBLEM), response.text
    return {e["field"] for e in response.json()["errors"]}


def test_accepted_event_is_stored_with_sequence_and_recorded_at(client, clock):
    event = f.inspection(f.finding())
    r = client.post("/v1/events", json=event)
    assert r.status_code == 201, r.text
    record = r.json()
    assert record["sequence"] == 1
    assert record["recorded_at"].startswith(clock.now.date().isoformat())
    assert r.headers["location"] == f"/v1/events/{event['event_id']}"
    got = client.get(f"/v1/events/{event['event_id']}").json()
    assert got == record
    assert got["payload"]["findings"][0]["finding_id"] == event["payload"]["findings"][0]["finding_id"]


def test_clean_visit_without_findings_is_accepted(client):
    r = client.post("/v1/events", json=f.inspection())
    assert r.status_code == 201
    assert r.json()["payload"]["findings"] == []


def test_same_event_twice_is_one_event(client):
    event = f.inspection(f.finding())
    first = client.post("/v1/events", json=event)
    # same content, keys reordered and the time written in another offset: still the same event
    again = dict(reversed(list(event.items())))
    again["occurred_at"] = (T0.astimezone(__import__("datetime").timezone(timedelta(hours=8)))).isoformat()
    second = client.post("/v1/events", json=again)
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json() == first.json()
    assert client.get("/v1/events").json()["items"] == [first.json()]


def test_same_event_id_with_different_content_is_409_and_changes_nothing(client):
    event = f.inspection(f.finding())
    client.post("/v1/events", json=event)
    changed = {**event, "source": "someone-else"}
    r = client.post("/v1/events", json=changed)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith(PROBLEM)
    assert event["event_id"] in r.json()["detail"]
    assert client.get(f"/v1/events/{event['event_id']}").json()["source"] == "tests"


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.pop("event_id"), {"event_id"}),
    (lambda e: e.update(event_id="not-a-uuid"), {"event_id"}),
    (lambda e: e.update(type="inspection.deleted"), {"type"}),
    (lambda e: e.pop("type"), {"type"}),
    (lambda e: e.update(schema_version=9), {"schema_version"}),
    (lambda e: e.update(occurred_at="2026-03-02T09:30:00"), {"occurred_at"}),
    (lambda e: e.update(occurred_at="yesterday"), {"occurred_at"}),
    (lambda e: e.update(occurred_at="1999-01-01T00:00:00Z"), {"occurred_at"}),
    (lambda e: e.update(region_code="51343"), {"region_code"}),
    (lambda e: e.update(colour="red"), {"colour"}),
    (lambda e: e["payload"].update(mode="drive-by"), {"payload.mode"}),
    (lambda e: e["payload"].update(villages_sampled=-1), {"payload.villages_sampled"}),
    (lambda e: e["payload"]["findings"][0].update(severity="huge"), {"payload.findings.0.severity"}),
    (lambda e: e["payload"]["findings"][0].update(indicator="happiness"), {"payload.findings.0.indicator"}),
    (lambda e: e["payload"]["findings"][0].update(deadline="2020-01-01"), {"payload.findings.0.deadline"}),
    (lambda e: e["payload"]["findings"][0].update(deadline="9999-12-31"), {"payload.findings.0.deadline"}),
    (lambda e: e["payload"]["findings"][0].update(deadline="2100-01-01"), {"payload.findings.0.deadline"}),
    # booleans are no counts, nor are strings or floats
    (lambda e: e["payload"].update(villages_sampled=True), {"payload.villages_sampled"}),
    (lambda e: e["payload"].update(households_sampled=False, villages_sampled=0), {"payload.households_sampled"}),
    (lambda e: e["payload"].update(villages_sampled="10"), {"payload.villages_sampled"}),
    (lambda e: e["payload"].update(villages_sampled=10.0), {"payload.villages_sampled"}),
    # households are sampled within villages
    (lambda e: e["payload"].update(villages_sampled=10, households_sampled=5), {"payload.households_sampled"}),
    (lambda e: e["payload"].update(villages_sampled=0, households_sampled=5), {"payload.households_sampled"}),
    (lambda e: e["payload"].update(villages_sampled=0, households_sampled=0,
                                   findings=[f.finding(indicator="housing")]),
     {"payload.households_sampled", "payload.villages_sampled"}),
    (lambda e: e["payload"].update(villages_sampled=1, households_sampled=0,
                                   findings=[f.finding(household_id="H-1")]), {"payload.households_sampled"}),
    (lambda e: e["payload"].update(villages_sampled=0, households_sampled=0, findings=[f.finding(indicator="road")]),
     {"payload.villages_sampled"}),
    (lambda e: e["payload"]["findings"].append(dict(e["payload"]["findings"][0])), {"payload.findings"}),
])
def test_schema_errors_are_422_naming_the_field(client, mutate, expected):
    event = f.inspection(f.finding())
    mutate(event)
    r = client.post("/v1/events", json=event)
    assert r.status_code == 422, r.text
    assert fields(r) == expected
    assert r.json()["status"] == 422 and r.json()["type"].startswith("urn:kaohe:problem:")
    assert client.get("/v1/events").json()["items"] == []


@pytest.mark.parametrize("deadline", ["2099-12-31", "2026-03-02"])
def test_a_deadline_up_to_2099_and_from_the_inspection_day_is_accepted(client, deadline):
    assert client.post("/v1/events", json=f.inspection(f.finding(deadline=deadline))).status_code == 201


@pytest.mark.parametrize("payload", [
    {"villages_sampled": 0, "households_sampled": 0, "findings": []},  # a records check at the county office
    {"villages_sampled": 0, "households_sampled": 0},  # …with a finding about the records (registry_accuracy)
    {"villages_sampled": 2, "households_sampled": 2},
])
def test_consistent_sampling_is_accepted(client, payload):
    r = client.post("/v1/events", json=f.inspection(f.finding(), **payload))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("make, field", [
    (lambda: f.envelope("inspector.absence_recorded", {"team_id": "t", "inspector_id": "i", "approved": 1}),
     "payload.approved"),
    (lambda: f.envelope("year_end_assessment.recorded", {"year": True, "score": 80.0}), "payload.year"),
    (lambda: f.envelope("year_end_assessment.recorded", {"year": 2026, "score": True}), "payload.score"),
    (lambda: f.daily_check(items_checked=True, items_failed=0), "payload.items_checked"),
    (lambda: f.envelope("county.status_changed", {"status": "exited", "exit_year": "2020"}), "payload.exit_year"),
])
def test_no_boolean_or_string_passes_for_a_number_or_a_flag(client, make, field):
    r = client.post("/v1/events", json=make())
    assert r.status_code == 422 and fields(r) == {field}, r.text


def test_a_time_in_the_future_is_named_with_every_other_fault(client, clock):
    event = f.inspection(f.finding(), at=clock.now + timedelta(days=30))
    event["payload"]["villages_sampled"] = "ten"
    r = client.post("/v1/events", json=event)
    assert r.status_code == 422 and fields(r) == {"occurred_at", "payload.villages_sampled"}
    assert "in the future" in r.json()["errors"][0]["message"] + r.json()["errors"][1]["message"]
    batch = client.post("/v1/events/batch", json={"events": [event]}).json()["results"][0]["problem"]
    assert {e["field"] for e in batch["errors"]} == {"occurred_at", "payload.villages_sampled"}


def test_a_visit_dated_in_the_future_is_blamed_not_its_deadlines(client):
    r = client.post("/v1/events", json=f.inspection(f.finding(), at=datetime(2099, 1, 1, tzinfo=timezone.utc)))
    assert r.status_code == 422 and fields(r) == {"occurred_at"}, r.text


def test_every_offending_field_is_named(client):
    event = f.inspection(f.finding(severity="huge", category="nope"), mode="drive-by")
    event["region_code"] = "x"
    r = client.post("/v1/events", json=event)
    assert r.status_code == 422
    assert fields(r) == {"region_code", "payload.mode", "payload.findings.0.severity", "payload.findings.0.category"}


@pytest.mark.parametrize("payload, field", [
    ({"status": "exited"}, "payload.exit_year"),
    ({"status": "in_poverty", "exit_year": 2020}, "payload.exit_year"),
])
def test_status_change_needs_a_consistent_exit_year(client, payload, field):
    r = client.post("/v1/events", json=f.envelope("county.status_changed", payload))
    assert r.status_code == 422
    assert fields(r) == {field}


def test_daily_check_cannot_fail_more_items_than_it_checked(client):
    r = client.post("/v1/events", json=f.daily_check(items_checked=5, items_failed=6))
    assert r.status_code == 422
    assert fields(r) == {"payload.items_failed"}


@pytest.mark.parametrize("code, why", [("999999", "not a known region"), ("513400", "a prefecture"),
                                        ("510000", "a province")])
def test_region_code_must_be_a_known_county(client, code, why):
    r = client.post("/v1/events", json=f.inspection(region=code))
    assert r.status_code == 422
    assert fields(r) == {"region_code"}
    assert why in r.json()["errors"][0]["message"]


def test_far_future_occurred_at_is_rejected(client, clock):
    r = client.post("/v1/events", json=f.inspection(at=clock.now + timedelta(days=2)))
    assert r.status_code == 422
    assert fields(r) == {"occurred_at"}
    ok = client.post("/v1/events", json=f.inspection(at=clock.now + timedelta(hours=2)))
    assert ok.status_code == 201  # a field device's clock may run a little ahead


@pytest.mark.parametrize("body, content_type", [
    (b"{not json", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    ("\u4e2d".encode("utf-16"), "application/json"),
])
def test_malformed_bodies_are_422_problems(client, body, content_type):
    r = client.post("/v1/events", content=body, headers={"content-type": content_type})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith(PROBLEM)


@pytest.mark.parametrize("content_type, why", [
    ("text/plain", "text/plain is not accepted"),
    ("application/xml", "application/xml is not accepted"),
    ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded is not accepted"),
    ("application/json; charset=latin-1", "charset=latin-1"),
    ("application/json; charset=utf-16", "charset=utf-16"),
    (None, "no Content-Type"),
])
def test_a_valid_event_under_another_media_type_is_415_naming_the_header(client, content_type, why):
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/events", content=orjson.dumps(f.inspection(f.finding())), headers=headers)
    assert r.status_code == 415, r.text
    assert fields(r) == {"Content-Type"} and why in r.json()["errors"][0]["message"]
    assert "application/json" in r.json()["detail"] and r.headers["accept-post"] == "application/json"
    assert client.get("/v1/events").json()["items"] == []


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON; Charset=\"UTF-8\"", "application/vnd.kaohe+json"])
def test_json_media_types_are_accepted(client, content_type):
    r = client.post("/v1/events", content=orjson.dumps(f.inspection()), headers={"content-type": content_type})
    assert r.status_code == 201, r.text


def test_routes_without_a_body_do_not_care_about_the_content_type(client):
    r = client.post("/v1/events", headers={"content-type": "text/plain"})  # no body: the route names it
    assert r.status_code == 415  # the route takes a JSON body: a non-JSON type is refused even empty
    r = client.post("/v1/events")
    assert r.status_code == 422 and fields(r) == {"(body)"}
    r = client.delete("/v1/keys/nonexistent", headers={"content-type": "text/plain"})
    assert r.status_code == 404


def test_idempotency_does_not_save_a_415(client):
    event = f.inspection()
    wrong = client.post("/v1/events", content=orjson.dumps(event),
                        headers={"content-type": "text/plain", "Idempotency-Key": "k-415"})
    assert wrong.status_code == 415
    right = client.post("/v1/events", json=event, headers={"Idempotency-Key": "k-415"})
    assert right.status_code == 201 and "idempotent-replayed" not in right.headers


def test_huge_body_is_413_problem(client, settings):
    big = b'{"x": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
    r = client.post("/v1/events", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.headers["content-type"].startswith(PROBLEM)


def test_unknown_event_is_404_problem(client):
    r = client.get(f"/v1/events/{f.uid()}")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith(PROBLEM)


def test_list_filters_and_cursor_pagination(client):
    other = "510722"
    posted = [client.post("/v1/events", json=f.inspection(region=COUNTY if i % 2 else other)).json()
              for i in range(7)]
    client.post("/v1/events", json=f.daily_check())
    page1 = client.get("/v1/events", params={"region_code": COUNTY, "type": "inspection.recorded", "limit": 2}).json()
    page2 = client.get("/v1/events", params={"region_code": COUNTY, "type": "inspection.recorded", "limit": 2,
                                             "cursor": page1["next_cursor"]}).json()
    assert [e["sequence"] for e in page1["items"] + page2["items"]] == [p["sequence"] for p in posted if
                                                                         p["region_code"] == COUNTY]
    assert page2["next_cursor"] is None
    # a prefecture code selects its counties; the province selects everything
    liangshan = client.get("/v1/events", params={"region_code": "513400"}).json()["items"]
    assert {e["region_code"] for e in liangshan} == {COUNTY}
    assert len(client.get("/v1/events", params={"region_code": "510000", "limit": 100}).json()["items"]) == 8


@pytest.mark.parametrize("params, field", [
    ({"limit": 0}, "query.limit"), ({"limit": 101}, "query.limit"), ({"cursor": "garbage"}, "cursor"),
    ({"type": "nope"}, "query.type"), ({"region_code": "12"}, "query.region_code"),
    ({"since": "2026-01-01T00:00:00"}, "query.since"),
])
def test_bad_list_parameters_are_422(client, params, field):
    r = client.get("/v1/events", params=params)
    assert r.status_code == 422
    assert fields(r) == {field}


def test_unknown_region_filter_is_404(client):
    assert client.get("/v1/events", params={"region_code": "999999"}).status_code == 404
