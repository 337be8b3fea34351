"""The rectification ledger: every allowed transition, every 409, overdue, and reads."""

from datetime import datetime, timedelta, timezone

import pytest

from tests import factories as f
from tests.factories import COUNTY, OTHER_COUNTY, T0


def post(client, event, status=201):
    r = client.post("/v1/events", json=event)
    assert r.status_code == status, r.text
    return r


def state(client, finding_id):
    return client.get(f"/v1/findings/{COUNTY}/{finding_id}").json()["state"]


@pytest.fixture
def fid(client):
    finding = f.finding()
    post(client, f.inspection(finding))
    return finding["finding_id"]


def day(n):
    return T0 + timedelta(days=n)


def test_report_then_verify(client, fid):
    post(client, f.step("rectification.reported", fid, at=day(1)))
    assert state(client, fid) == "reported"
    post(client, f.step("rectification.verified", fid, at=day(2)))
    detail = client.get(f"/v1/findings/{COUNTY}/{fid}").json()
    assert detail["state"] == "verified"
    assert [h["to_state"] for h in detail["history"]] == ["open", "reported", "verified"]
    assert detail["resolved_at"] is not None


def test_rejected_fix_reopens_and_counts(client, fid):
    post(client, f.step("rectification.reported", fid, at=day(1)))
    post(client, f.step("rectification.rejected", fid, at=day(2)))
    detail = client.get(f"/v1/findings/{COUNTY}/{fid}").json()
    assert (detail["state"], detail["rejections"], detail["reports"]) == ("open", 1, 1)
    post(client, f.step("rectification.reported", fid, at=day(3)))
    post(client, f.step("rectification.verified", fid, at=day(4)))
    assert state(client, fid) == "verified"


def test_dispute_upheld_stays_open_and_cannot_be_disputed_again(client, fid):
    post(client, f.step("finding.disputed", fid, at=day(1)))
    assert state(client, fid) == "disputed"
    post(client, f.step("finding.upheld", fid, at=day(2)))
    assert state(client, fid) == "open"
    r = post(client, f.step("finding.disputed", fid, at=day(3)), 409)
    assert "final" in r.json()["detail"]


def test_dispute_withdrawn_removes_the_finding(client, fid):
    post(client, f.step("finding.disputed", fid, at=day(1)))
    post(client, f.step("finding.withdrawn", fid, at=day(2)))
    assert state(client, fid) == "withdrawn"
    post(client, f.step("rectification.reported", fid, at=day(3)), 409)


@pytest.mark.parametrize("history, event_type, current", [
    ([], "rectification.verified", "open"),                       # verify before report
    ([], "rectification.rejected", "open"),
    ([], "finding.upheld", "open"),
    ([], "finding.withdrawn", "open"),
    (["rectification.reported"], "rectification.reported", "reported"),
    (["rectification.reported"], "finding.disputed", "reported"),
    # report after verified
    (["rectification.reported", "rectification.verified"], "rectification.reported", "verified"),
    (["rectification.reported", "rectification.verified"], "rectification.rejected", "verified"),
    (["finding.disputed"], "rectification.reported", "disputed"),
    (["finding.disputed"], "finding.disputed", "disputed"),
])
def test_transitions_the_ledger_does_not_allow_are_409_with_the_current_state(client, fid, history, event_type,
                                                                              current):
    for i, t in enumerate(history, start=1):
        post(client, f.step(t, fid, at=day(i)))
    before = client.get("/v1/events", params={"limit": 100}).json()["items"]
    r = post(client, f.step(event_type, fid, at=day(len(history) + 1)), 409)
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["current_state"] == current
    assert f"'{current}'" in body["detail"]
    assert client.get("/v1/events", params={"limit": 100}).json()["items"] == before
    assert state(client, fid) == current


def test_unknown_finding_is_409(client):
    r = post(client, f.step("rectification.reported", "F-NOPE"), 409)
    assert "not in the ledger" in r.json()["detail"]


def test_finding_of_another_county_is_409_without_naming_that_county(client, fid):
    r = post(client, f.step("rectification.reported", fid, region=OTHER_COUNTY), 409)
    assert r.json()["detail"].startswith(f"finding {fid!r} is not in the ledger of county {OTHER_COUNTY};")
    assert COUNTY not in r.text  # the sender's key may not see the county the finding is in
    # …and in the same words as a finding that exists nowhere
    nowhere = post(client, f.step("rectification.reported", "F-NOWHERE", region=OTHER_COUNTY), 409)
    assert nowhere.json()["detail"] == r.json()["detail"].replace(repr(fid), "'F-NOWHERE'")


def test_transition_before_the_last_change_is_409(client, fid):
    post(client, f.step("rectification.reported", fid, at=day(5)))
    r = post(client, f.step("rectification.verified", fid, at=day(4)), 409)
    assert "before the finding's last change" in r.json()["detail"]


def test_inspection_and_finding_ids_are_unique(client, fid):
    post(client, f.inspection(f.finding(fid)), 409)
    first = f.inspection()
    post(client, first)
    again = f.inspection()
    again["payload"]["inspection_id"] = first["payload"]["inspection_id"]
    r = post(client, again, 409)
    assert r.json()["inspection_id"] == first["payload"]["inspection_id"]


def test_daily_check_ids_are_unique(client):
    check = f.daily_check()
    post(client, check)
    again = f.daily_check(check_id=check["payload"]["check_id"])
    post(client, again, 409)


def test_overdue_is_open_or_reported_past_the_deadline(client, clock):
    findings = {name: f.finding(deadline=f.deadline(d)) for name, d in
                [("late_open", 5), ("late_reported", 5), ("late_verified", 5), ("on_time", 60), ("late_disputed", 5)]}
    post(client, f.inspection(*findings.values()))
    post(client, f.step("rectification.reported", findings["late_reported"]["finding_id"]))
    post(client, f.step("rectification.reported", findings["late_verified"]["finding_id"]))
    post(client, f.step("rectification.verified", findings["late_verified"]["finding_id"], at=day(2)))
    post(client, f.step("finding.disputed", findings["late_disputed"]["finding_id"]))
    clock.now = datetime.combine(T0.date() + timedelta(days=5), datetime.min.time(), timezone(timedelta(hours=8)))
    clock.now += timedelta(hours=12)  # the deadline day itself, in Beijing time: not yet overdue
    assert client.get("/v1/findings", params={"state": "overdue"}).json()["items"] == []
    clock.now += timedelta(days=3)
    overdue = client.get("/v1/findings", params={"state": "overdue", "region_code": COUNTY}).json()["items"]
    assert {x["finding_id"] for x in overdue} == {findings["late_open"]["finding_id"],
                                                  findings["late_reported"]["finding_id"]}
    assert all(x["overdue"] and x["days_overdue"] == 3 for x in overdue)
    assert client.get(f"/v1/findings/{COUNTY}/{findings['on_time']['finding_id']}").json()["overdue"] is False


def test_findings_filter_by_prefecture_state_and_severity_with_pagination(client):
    post(client, f.inspection(*[f.finding(severity="critical" if i % 3 == 0 else "minor") for i in range(9)]))
    post(client, f.inspection(f.finding(), region="510722"))
    liangshan = client.get("/v1/findings", params={"region_code": "513400", "limit": 100}).json()["items"]
    assert len(liangshan) == 9
    critical = client.get("/v1/findings", params={"severity": "critical", "state": "open"}).json()["items"]
    assert len(critical) == 3
    page1 = client.get("/v1/findings", params={"limit": 4}).json()
    page2 = client.get("/v1/findings", params={"limit": 4, "cursor": page1["next_cursor"]}).json()
    page3 = client.get("/v1/findings", params={"limit": 4, "cursor": page2["next_cursor"]}).json()
    ids = [x["finding_id"] for p in (page1, page2, page3) for x in p["items"]]
    assert len(ids) == len(set(ids)) == 10 and page3["next_cursor"] is None


def test_unknown_finding_read_is_404_and_bad_state_is_422(client):
    assert client.get(f"/v1/findings/{COUNTY}/F-NOPE").status_code == 404
    assert client.get("/v1/findings", params={"state": "lost"}).status_code == 422


def test_county_status_change_moves_the_county_and_repeats_are_409(client):
    code = "513431"
    assert client.get(f"/v1/regions/{code}").json()["status"] == "in_poverty"
    post(client, f.envelope("county.status_changed", {"status": "exited", "exit_year": 2020}, region=code))
    region = client.get(f"/v1/regions/{code}").json()
    assert (region["status"], region["exit_year"], region["status_basis"]) == ("exited", 2020, "event")
    r = post(client, f.envelope("county.status_changed", {"status": "exited", "exit_year": 2021}, region=code), 409)
    assert r.json()["current_status"] == "exited"
    exited = client.get("/v1/regions", params={"status": "exited", "parent": "513400"}).json()
    assert code in {x["code"] for x in exited}


def test_return_risk_cleared_needs_a_flag(client):
    flagged = f.envelope("return_risk.flagged", {"household_id": "H-1", "reasons": ["illness"]})
    cleared = f.envelope("return_risk.cleared", {"household_id": "H-1", "reasons": []})
    post(client, cleared, 409)
    post(client, flagged)
    post(client, cleared)
    post(client, f.envelope("return_risk.cleared", {"household_id": "H-1", "reasons": []}), 409)
