"""Ids partners choose (inspection, daily check, finding, household) are unique within a county:
another county's use of an id neither blocks it nor shows through any answer."""

from datetime import timedelta

import pytest
from sqlalchemy import event

from tests import factories as f
from tests.conftest import bearer
from tests.factories import COUNTY, OTHER_COUNTY, T0

CHENGDU = "510104"  # 锦江区, Chengdu: not in Liangshan (513400)


def post(client, event, status=201, key=None):
    r = client.post("/v1/events", json=event, **({"headers": bearer(key)} if key else {}))
    assert r.status_code == status, r.text
    return r


def detail(client, county, finding_id, key=None):
    r = client.get(f"/v1/findings/{county}/{finding_id}", **({"headers": bearer(key)} if key else {}))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def liangshan(access):
    """A key of Liangshan prefecture (513400): writes and reads its own counties."""
    return access.key(["events:write", "events:read"], "513400", name="liangshan app")


@pytest.fixture
def chengdu(access):
    return access.key(["events:write", "events:read"], "510100", name="chengdu app")


def test_another_prefectures_key_cannot_squat_a_countys_ids(client, liangshan, chengdu):
    ids = {"inspection_id": "I-510104-2026-6b89", "finding_id": "F-510104-2026-6b89",
           "check_id": "DC-510104-2026-6b89", "household_id": "510104-001-0001"}
    squat = f.inspection(f.finding(ids["finding_id"]), inspection_id=ids["inspection_id"])  # in 513431
    post(client, squat, key=liangshan)
    post(client, f.daily_check(check_id=ids["check_id"]), key=liangshan)
    post(client, f.envelope("return_risk.flagged", {"household_id": ids["household_id"], "reasons": ["x"]}),
         key=liangshan)
    # Chengdu's own records with the same ids go in as if the squatter had never sent anything
    real = f.inspection(f.finding(ids["finding_id"]), inspection_id=ids["inspection_id"], region=CHENGDU)
    post(client, real, key=chengdu)
    post(client, f.daily_check(region=CHENGDU, check_id=ids["check_id"]), key=chengdu)
    flag = f.envelope("return_risk.flagged", {"household_id": ids["household_id"], "reasons": ["y"]}, region=CHENGDU)
    post(client, flag, key=chengdu)
    post(client, f.envelope("return_risk.cleared", {"household_id": ids["household_id"], "reasons": []},
                            region=CHENGDU), key=chengdu)
    # …and each county's finding is its own, seen by its own key only
    assert detail(client, CHENGDU, ids["finding_id"], chengdu)["inspection_id"] == ids["inspection_id"]
    assert detail(client, COUNTY, ids["finding_id"], liangshan)["region_code"] == COUNTY
    # a second use of an id inside the same county is still refused
    again = f.inspection(f.finding(), inspection_id=ids["inspection_id"], region=CHENGDU)
    assert "already recorded" in post(client, again, 409, key=chengdu).json()["detail"]
    assert "already in the ledger" in post(client, f.inspection(f.finding(ids["finding_id"]), region=CHENGDU), 409,
                                           key=chengdu).json()["detail"]


def test_two_counties_each_have_finding_f0001_and_their_transitions_act_on_their_own(client):
    post(client, f.inspection(f.finding("F-0001", severity="critical"), region=COUNTY))
    post(client, f.inspection(f.finding("F-0001", severity="minor"), region=OTHER_COUNTY))
    post(client, f.step("rectification.reported", "F-0001", region=COUNTY))
    post(client, f.step("rectification.verified", "F-0001", region=COUNTY, at=T0 + timedelta(days=2)))
    post(client, f.step("finding.disputed", "F-0001", region=OTHER_COUNTY))
    mine, theirs = detail(client, COUNTY, "F-0001"), detail(client, OTHER_COUNTY, "F-0001")
    assert (mine["state"], mine["severity"], [h["to_state"] for h in mine["history"]]) == (
        "verified", "critical", ["open", "reported", "verified"])
    assert (theirs["state"], theirs["severity"], [h["to_state"] for h in theirs["history"]]) == (
        "disputed", "minor", ["open", "disputed"])
    # a county's verified finding cannot be reported again, whatever the other county's F-0001 does
    post(client, f.step("rectification.reported", "F-0001", region=COUNTY, at=T0 + timedelta(days=3)), 409)
    # the list pages through both, one at a time (the cursor holds the county as well as the id)
    seen, cursor = [], None
    while True:
        page = client.get("/v1/findings", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        seen += [(x["region_code"], x["finding_id"], x["state"]) for x in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == [(COUNTY, "F-0001", "verified"), (OTHER_COUNTY, "F-0001", "disputed")]


def test_same_id_in_two_counties_within_one_batch(client):
    events = [f.inspection(f.finding("F-B"), inspection_id="I-B", region=COUNTY),
              f.inspection(f.finding("F-B"), inspection_id="I-B", region=OTHER_COUNTY),
              f.step("rectification.reported", "F-B", region=OTHER_COUNTY),
              f.inspection(f.finding("F-B"), region=OTHER_COUNTY)]  # the same county again: refused
    results = client.post("/v1/events/batch", json={"events": events}).json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "accepted", "rejected"]
    assert detail(client, COUNTY, "F-B")["state"] == "open"
    assert detail(client, OTHER_COUNTY, "F-B")["state"] == "reported"


def test_a_finding_outside_the_key_is_answered_byte_for_byte_like_a_missing_one(client, database, chengdu):
    url = f"/v1/findings/{COUNTY}/F-SECRET"
    before = client.get(url, headers=bearer(chengdu))
    post(client, f.inspection(f.finding("F-SECRET")))
    statements = []

    def count(*_):
        statements.append(1)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        after = client.get(url, headers=bearer(chengdu))
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    assert client.get(url).status_code == 200  # it is there, for a key that covers the county
    assert (before.status_code, after.status_code) == (404, 404)
    assert before.content == after.content and before.headers["content-type"] == after.headers["content-type"]
    assert statements == []  # the region is judged before anything is read
    # inside the key's region, a missing finding gets the same words
    missing = client.get(f"/v1/findings/{CHENGDU}/F-SECRET", headers=bearer(chengdu))
    assert missing.status_code == 404
    assert missing.content.replace(CHENGDU.encode(), COUNTY.encode()) == after.content


def test_return_risk_answers_do_not_tell_a_foreign_flagged_household_from_an_unknown_one(client):
    post(client, f.envelope("return_risk.flagged", {"household_id": "H-FLAGGED", "reasons": ["illness"]}))
    post(client, f.envelope("return_risk.flagged", {"household_id": "H-CLEARED", "reasons": ["illness"]}))
    post(client, f.envelope("return_risk.cleared", {"household_id": "H-CLEARED", "reasons": []}))

    def clear(household_id):
        r = post(client, f.envelope("return_risk.cleared", {"household_id": household_id, "reasons": []},
                                    region=OTHER_COUNTY), 409).json()
        return {k: (v.replace(household_id, "<id>") if isinstance(v, str) else v) for k, v in r.items()
                if k not in ("instance",)}

    assert clear("H-FLAGGED") == clear("H-CLEARED") == clear("H-NOWHERE")
    # flagging the same id in another county makes it that county's own household
    post(client, f.envelope("return_risk.flagged", {"household_id": "H-FLAGGED", "reasons": ["x"]},
                            region=OTHER_COUNTY))
    post(client, f.envelope("return_risk.cleared", {"household_id": "H-FLAGGED", "reasons": []},
                            region=OTHER_COUNTY))
    post(client, f.envelope("return_risk.cleared", {"household_id": "H-FLAGGED", "reasons": []}))  # still flagged


def test_the_old_route_points_to_the_new_one_for_any_id(client):
    post(client, f.inspection(f.finding("F-OLD")))
    known, unknown = client.get("/v1/findings/F-OLD"), client.get("/v1/findings/F-NONE")
    assert known.status_code == unknown.status_code == 404
    assert known.json()["detail"] == unknown.json()["detail"]
    assert "/v1/findings/{region_code}/{finding_id}" in known.json()["detail"]
