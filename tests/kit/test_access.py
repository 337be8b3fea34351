"""API keys on every service: 401 without a key, 403 without the scope, 404 outside the region;
the key admin endpoints; idempotency keys; rate limits."""

import hashlib
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlmodel import Session

from bench.regions import national_regions
from services.intake.app import create_app as intake_app
from services.intake.regions.service import shipped_regions
from services.intake.store.models import StoredEvent
from services.kit.access import Access
from services.kit.access.__main__ import main as access_cli
from services.kit.access.idempotency import IdempotencyStore, ShownOnce, _without, fingerprint
from services.kit.access.local import file_regions, local_keys, region_of, saved_token
from services.kit.access.principal import NATIONAL, Principal, key_region
from services.kit.access.ratelimit import RateLimiter
from services.kit.access.tables import ApiKey, IdempotencyRecord
from services.ranking.app import create_app as ranking_app
from services.ranking.models import Region, Standing, StandingHistory
from services.scoring.app import create_app as scoring_app
from services.scoring.models import ExplanationBatch, ScoreRow, TeamPoints
from tests import factories as f
from tests.conftest import access_database, bearer, fresh_database, idempotency_records
from tests.fuzz_hooks import names_a, parsed

A_PREF, A_COUNTY = "513400", "513431"  # 凉山州, 昭觉县
B_PREF, B_COUNTY = "510700", "510722"  # 绵阳市, 三台县
NOW = datetime(2027, 1, 10, tzinfo=timezone.utc)
README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_region_rule():
    county = Principal("k", "n", frozenset({"scores:read"}), A_COUNTY)
    prefecture = Principal("k", "n", frozenset({"scores:read"}), A_PREF)
    province = Principal("k", "n", frozenset({"admin"}), "510000")
    assert prefecture.covers(A_COUNTY) and prefecture.covers(A_PREF) and not prefecture.covers(B_COUNTY)
    assert not prefecture.covers("510000") and prefecture.sees("510000")  # its province: a name, no data
    assert county.covers(A_COUNTY) and not county.covers("513432") and county.sees(A_PREF)
    assert province.covers(B_COUNTY) and not province.covers("520102")
    assert province.has("events:write", "webhooks:manage") and not prefecture.has("events:read")
    national = Principal("k", "n", frozenset({"admin"}), NATIONAL)
    assert national.covers(B_COUNTY) and national.covers("520102") and national.covers(NATIONAL)
    assert national.province_wide and not province.covers(NATIONAL) and not province.sees(NATIONAL)


@pytest.mark.parametrize("code", ["513431\n", "5134311", "51343", "013431", "5134a1",
                                  "\u0665\u0661\u0663\u0664\u0663\u0661", "5\u0661\u0663\u0664\u0663\u0661",
                                  "\uff15\uff11\uff13\uff14\uff13\uff11"])
def test_a_keys_region_is_six_ascii_digits_and_nothing_after(code):
    """A key's region (the API and the create-key CLI check it so): not a trailing newline, which
    `$` let through, nor another script's digits (Arabic-Indic, full-width), which `\\d` did."""
    assert not key_region(code)
    assert key_region("513431") and key_region(NATIONAL)


# --- the three services over one small world: A's data and B's data -------------------------------------


@pytest.fixture
def world(database, tmp_path, settings, access, clock):
    """Intake (with events and findings of both prefectures), scoring and ranking (seeded read
    models of both), each as a TestClient; the keys of A and B."""
    with fresh_database("sqlite", tmp_path, "scoring") as scoring_db, \
            fresh_database("sqlite", tmp_path, "ranking") as ranking_db:
        _seed_read_models(scoring_db.engine, ranking_db.engine)
        with TestClient(intake_app(settings, engine=database.engine, clock=clock)) as intake, \
                TestClient(scoring_app(settings, engine=scoring_db.engine)) as scoring, \
                TestClient(ranking_app(settings, engine=ranking_db.engine)) as ranking:
            admin = bearer(access.admin)
            a_finding, b_finding = f.finding(), f.finding()
            a_event = f.inspection(a_finding, region=A_COUNTY)
            for event in (a_event, f.inspection(b_finding, region=B_COUNTY)):
                assert intake.post("/v1/events", json=event, headers=admin).status_code == 201
            everything = ["events:write", "events:read", "scores:read", "standings:read", "admin"]
            yield {
                "intake": intake, "scoring": scoring, "ranking": ranking, "admin": admin,
                "a": bearer(access.key(everything, A_PREF)), "b": bearer(access.key(everything, B_PREF)),
                "a_event": a_event, "a_finding": a_finding["finding_id"], "database": database,
                "a_key_id": access.store.list(A_PREF)[0].id,
            }


def _seed_read_models(scoring, ranking) -> None:
    score = {"year": 2026, "gated": False, "components": "{}", "policy_id": "default-v1", "cause": "x", "as_of": NOW,
             "grade": "good", "total": 90.0}
    with Session(scoring) as s:
        s.execute(insert(ScoreRow), [
            {**score, "region_code": A_COUNTY, "level": "county", "parent_code": A_PREF, "league": "in_poverty"},
            {**score, "region_code": B_COUNTY, "level": "county", "parent_code": B_PREF, "league": "in_poverty"},
            {**score, "region_code": A_PREF, "level": "prefecture", "parent_code": "510000", "league": None},
            {**score, "region_code": B_PREF, "level": "prefecture", "parent_code": "510000", "league": None}])
        s.execute(insert(ExplanationBatch), [
            {"region_code": c, "year": 2026, "policy_id": "default-v1",
             "lines": orjson.dumps([["inspections", -1.0, "r", "x", NOW]]).decode()} for c in (A_COUNTY, B_COUNTY)])
        s.execute(insert(TeamPoints), [{"team_id": "T-1", "region_code": A_COUNTY, "findings_credited": 1,
                                         "absences": "{}", "as_of": NOW}])
        s.commit()
    with Session(ranking) as s:
        s.execute(insert(Region), [
            {"code": "510000", "name": "四川省", "level": "province", "parent_code": None},
            {"code": A_PREF, "name": "凉山彝族自治州", "level": "prefecture", "parent_code": "510000"},
            {"code": B_PREF, "name": "绵阳市", "level": "prefecture", "parent_code": "510000"},
            {"code": A_COUNTY, "name": "昭觉县", "level": "county", "parent_code": A_PREF},
            {"code": B_COUNTY, "name": "三台县", "level": "county", "parent_code": B_PREF}])
        rows = [("510000", "county", "in_poverty", A_COUNTY, 1), ("510000", "county", "in_poverty", B_COUNTY, 2),
                (A_PREF, "county", "in_poverty", A_COUNTY, 1), (B_PREF, "county", "in_poverty", B_COUNTY, 1),
                ("510000", "prefecture", "all", A_PREF, 1), ("510000", "prefecture", "all", B_PREF, 2)]
        s.execute(insert(Standing), [{"scope": sc, "level": lv, "league": lg, "year": 2026, "region_code": c,
                                      "rank": r, "total": 90.0, "grade": "good", "changed_at": NOW}
                                     for sc, lv, lg, c, r in rows])
        s.execute(insert(StandingHistory), [{"scope": sc, "level": lv, "league": lg, "year": 2026, "region_code": c,
                                             "rank": r, "total": 90.0, "grade": "good", "at": NOW}
                                            for sc, lv, lg, c, r in rows])
        s.commit()


def _codes(text: str) -> bool:
    """Does a JSON or NDJSON response name a region of A's prefecture (as a whole value)?"""
    return names_a(parsed(text))


# Every route of every service that holds regional data, and how B's key asks it about A.
# (method, path template) -> (service, request, what B must get)
def _requests(w):
    ev, fid, kid = w["a_event"], w["a_finding"], w["a_key_id"]
    return {
        ("POST", "/v1/events"): ("intake", ("POST", "/v1/events", {"json": f.inspection(f.finding(), region=A_COUNTY)}),
                                 422),  # as for a region_code that does not exist
        ("POST", "/v1/events/batch"): ("intake", ("POST", "/v1/events/batch",
                                                  {"json": {"events": [f.inspection(f.finding(), region=A_COUNTY)]}}),
                                       "batch-422"),
        ("GET", "/v1/events"): ("intake", ("GET", "/v1/events", {"params": {"region_code": A_PREF}}), 404),
        ("GET", "/v1/events/export"): ("intake", ("GET", "/v1/events/export", {}), "none-of-A"),
        ("GET", "/v1/events/{event_id}"): ("intake", ("GET", f"/v1/events/{ev['event_id']}", {}), 404),
        ("GET", "/v1/findings"): ("intake", ("GET", "/v1/findings", {"params": {"region_code": A_COUNTY}}), 404),
        ("GET", "/v1/findings/{region_code}/{finding_id}"): ("intake", ("GET", f"/v1/findings/{A_COUNTY}/{fid}", {}),
                                                          404),
        ("GET", "/v1/regions"): ("intake", ("GET", "/v1/regions", {}), "none-of-A"),
        ("GET", "/v1/regions/{code}"): ("intake", ("GET", f"/v1/regions/{A_PREF}", {}), 404),
        ("GET", "/v1/audit/verify"): ("intake", ("GET", "/v1/audit/verify", {}), 403),
        ("POST", "/v1/keys"): ("intake", ("POST", "/v1/keys", {"json": {"name": "x", "scopes": ["events:read"],
                                                                        "region": A_COUNTY}}), 422),
        ("GET", "/v1/keys"): ("intake", ("GET", "/v1/keys", {}), "none-of-A"),
        ("GET", "/v1/keys/{key_id}"): ("intake", ("GET", f"/v1/keys/{kid}", {}), 404),
        ("DELETE", "/v1/keys/{key_id}"): ("intake", ("DELETE", f"/v1/keys/{kid}", {}), 404),
        ("GET", "/v1/scores/{region_code}"): ("scoring", ("GET", f"/v1/scores/{A_COUNTY}", {"params": {"year": 2026}}),
                                              404),
        ("GET", "/v1/scores/{region_code}/explanation"): ("scoring", ("GET", f"/v1/scores/{A_COUNTY}/explanation",
                                                                      {"params": {"year": 2026}}), 404),
        ("GET", "/v1/scores"): ("scoring", ("GET", "/v1/scores", {"params": {"parent": "510000", "year": 2026}}),
                                "none-of-A"),
        ("GET", "/v1/inspector-points"): ("scoring", ("GET", "/v1/inspector-points", {"params": {"team_id": "T-1"}}),
                                          403),
        ("POST", "/v1/policies"): ("scoring", ("POST", "/v1/policies", {"json": {}}), 403),
        ("POST", "/v1/policies/{policy_id}/activate"): ("scoring", ("POST", "/v1/policies/default-v1/activate", {}),
                                                        403),
        ("POST", "/v1/rebuilds"): ("scoring", ("POST", "/v1/rebuilds", {}), 403),
        ("GET", "/v1/rebuilds/{rebuild_id}"): ("scoring", ("GET", "/v1/rebuilds/1", {}), 403),
        ("GET", "/v1/standings"): ("ranking", ("GET", "/v1/standings", {"params": {"region": "510000", "year": 2026}}),
                                   "none-of-A"),
        ("GET", "/v1/standings/stream"): ("ranking", ("GET", "/v1/standings/stream", {"params": {"region": A_PREF}}),
                                          404),
        ("GET", "/v1/standings/{region_code}"): ("ranking", ("GET", f"/v1/standings/{A_COUNTY}",
                                                             {"params": {"year": 2026}}), 404),
        ("GET", "/v1/standings/{region_code}/history"): ("ranking", ("GET", f"/v1/standings/{A_COUNTY}/history",
                                                                     {"params": {"year": 2026}}), 404),
        ("GET", "/v1/dashboard/county/{region_code}"): ("ranking", ("GET", f"/v1/dashboard/county/{A_COUNTY}",
                                                                    {"params": {"year": 2026}}), 404),
    }


# Routes with no regional data: the same for every key (they still need one).
REFERENCE = {("GET", "/asyncapi.json"), ("GET", "/v1/schemas"), ("GET", "/v1/schemas/{type}"),
             ("GET", "/v1/schemas/{type}/sample"), ("GET", "/v1/policies"), ("GET", "/v1/policies/{policy_id}"),
             ("GET", "/v1/regions@ranking")}
OPEN = {"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/", "/static", "/_docs"}


def _routes(client, service) -> set[tuple[str, str]]:
    """Every operation in the service's OpenAPI document (what partners can call)."""
    out = set()
    for path, operations in client.app.openapi()["paths"].items():
        if path in OPEN:
            continue
        for method in operations:
            out.add((method.upper(), path if not (service == "ranking" and path == "/v1/regions")
                     else "/v1/regions@ranking"))
    return out


def test_every_route_needs_a_key(world):
    for service in ("intake", "scoring", "ranking"):
        client = world[service]
        routes = _routes(client, service)
        assert len(routes) >= 6, routes
        for method, path in routes:
            url = path.split("@")[0].replace("{", "").replace("}", "")
            r = client.request(method, url)
            assert r.status_code == 401, (service, method, path, r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"].startswith("Bearer")
            bad = client.request(method, url, headers=bearer("kh_0000000000000000_forged"))
            assert bad.status_code == 401, (service, method, path)


def test_a_key_of_another_prefecture_sees_nothing_of_it_on_any_route(world):
    requests = _requests(world)
    # every route with regional data is in the table: a new route without a check fails here
    routes = set().union(*(_routes(world[s], s) for s in ("intake", "scoring", "ranking")))
    assert routes - REFERENCE == set(requests), (routes - REFERENCE) ^ set(requests)
    with Session(world["database"].engine) as s:
        events_before = s.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
    for (method, path), (service, (m, url, kwargs), expected) in requests.items():
        r = world[service].request(m, url, headers=world["b"], **kwargs)
        where = f"{method} {path} → {r.status_code} {r.text[:300]}"
        if expected == "none-of-A":
            assert r.status_code == 200 and not _codes(r.text), where
        elif expected == "batch-422":
            assert r.status_code == 200 and r.json()["results"][0]["problem"]["status"] == 422, where
        else:
            assert r.status_code == expected, where
            assert r.headers["content-type"] == "application/problem+json", where
        # …and A's own key gets A's data from the same route (the check is about regions, not a blanket no)
        if method == "GET" and expected in (404, "none-of-A") and path != "/v1/standings/stream":
            mine = world[service].request(m, url, headers=world["a"], **kwargs)
            assert mine.status_code == 200 and _codes(mine.text), f"{method} {path} for A: {mine.status_code}"
    with Session(world["database"].engine) as s:  # nothing of B's writes landed in A
        assert s.execute(select(func.count()).select_from(StoredEvent)).scalar_one() == events_before


def _code_blanked(code: str, body: dict) -> dict:
    """A problem with the region code it names blanked out (what else tells two answers apart)."""
    return orjson.loads(orjson.dumps(body).replace(code.encode(), b"<code>"))


def test_a_region_outside_the_key_is_answered_as_one_that_does_not_exist(world):
    """B's key, about A's county (it exists) and about 999999 (it does not): the same answer, word
    for word but the code, for one event, a batch item and a new key."""
    intake, b = world["intake"], world["b"]
    answers = {}
    for code in (A_COUNTY, "999999"):
        event = f.inspection(f.finding(), region=code)
        one = intake.post("/v1/events", json=event, headers=b)
        batch = intake.post("/v1/events/batch", json={"events": [event]}, headers=b)
        key = intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": code}, headers=b)
        assert (one.status_code, batch.status_code, key.status_code) == (422, 200, 422), (code, one.text, key.text)
        assert one.headers["content-type"] == key.headers["content-type"] == "application/problem+json"
        answers[code] = [_code_blanked(code, one.json()), _code_blanked(code, batch.json()["results"][0]["problem"]),
                         _code_blanked(code, key.json())]
        assert [{e["field"] for e in a["errors"]} for a in answers[code]] == [{"region_code"}, {"region_code"},
                                                                              {"region"}]
    assert answers[A_COUNTY] == answers["999999"]
    # inside the key's region, a code that does not exist is the same 422
    r = intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": "510799"}, headers=b)
    assert r.status_code == 422 and _code_blanked("510799", r.json()) == answers["999999"][2]
    # its own province is no secret to the key: outside its region, said so
    r = intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": "510000"}, headers=b)
    assert r.status_code == 403 and "outside your key's region" in r.json()["detail"]


def test_reference_routes_answer_any_key_the_same(world):
    for method, path in [("GET", "/v1/schemas"), ("GET", "/asyncapi.json")]:
        a = world["intake"].request(method, path, headers=world["a"])
        b = world["intake"].request(method, path, headers=world["b"])
        assert a.status_code == b.status_code == 200 and a.content == b.content
    r = world["ranking"].get("/v1/regions", headers=world["b"]).json()
    assert {x["code"] for x in r} == {"510000", B_PREF, B_COUNTY}


def test_only_the_stream_takes_the_key_as_access_token_and_its_openapi_says_so(world, access):
    """EventSource cannot send headers; the README sends the key as `?access_token=` for the stream only."""
    for service in ("intake", "scoring", "ranking"):
        for path, operations in world[service].app.openapi()["paths"].items():
            for method, op in operations.items():
                query = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
                assert ("access_token" in query) == (path == "/v1/standings/stream"), (service, method, path)
    stream = world["ranking"].app.openapi()["paths"]["/v1/standings/stream"]["get"]
    declared = next(p for p in stream["parameters"] if p["name"] == "access_token")
    assert not declared["required"] and "Authorization: Bearer" in declared["description"]
    assert "access log leaves the query string out" in declared["description"]
    ranking, reader = world["ranking"], access.key(["standings:read"], A_PREF)
    unknown = {"region": "999999"}  # a 404 once let in: the stream itself never starts
    assert ranking.get("/v1/standings/stream", params={**unknown, "access_token": reader}).status_code == 404
    assert ranking.get("/v1/standings/stream", params={**unknown, "access_token": "kh_0_forged"},
                       headers=world["a"]).status_code == 404  # the header wins, as before
    assert ranking.get("/v1/standings/stream", params={**unknown, "access_token": "kh_0_forged"}).status_code == 401
    other = ranking.get("/v1/standings", params={"region": A_PREF, "year": 2026, "access_token": reader})
    assert other.status_code == 401  # the query string carries a key for the stream only


def test_a_missing_scope_is_403(world, access):
    reader = bearer(access.key(["standings:read"], "510000"))
    r = world["intake"].post("/v1/events", json=f.inspection(f.finding()), headers=reader)
    assert r.status_code == 403 and r.json()["required_scopes"] == ["events:write"]
    assert world["scoring"].get(f"/v1/scores/{A_COUNTY}", params={"year": 2026}, headers=reader).status_code == 403
    assert world["ranking"].get("/v1/standings", params={"region": "510000", "year": 2026},
                                headers=reader).status_code == 200


def test_a_403_names_only_the_scopes_the_key_lacks(world, access):
    county_page = f"/v1/dashboard/county/{A_COUNTY}"  # needs scores:read and events:read
    partial = bearer(access.key(["standings:read", "scores:read"], A_PREF))
    r = world["ranking"].get(county_page, params={"year": 2026}, headers=partial)
    problem = r.json()
    assert r.status_code == 403 and problem["missing_scopes"] == ["events:read"], r.text
    assert problem["detail"] == "this API key lacks the scope events:read"
    assert problem["required_scopes"] == ["scores:read", "events:read"]
    neither = bearer(access.key(["standings:read"], A_PREF))
    r = world["ranking"].get(county_page, params={"year": 2026}, headers=neither)
    assert r.json()["missing_scopes"] == ["scores:read", "events:read"]
    assert r.json()["detail"] == "this API key lacks the scopes scores:read and events:read"


def test_the_readme_dashboard_key_opens_every_dashboard_page(world):
    """The key the README tells a prefecture to make for its dashboard reads what the dashboard asks for."""
    body = re.search(r"-d '(\{\"name\": \"凉山州 dashboard\".*?\})'", README.read_text()).group(1)
    r = world["intake"].post("/v1/keys", json=orjson.loads(body), headers=world["admin"])
    assert r.status_code == 201, r.text
    key, region = bearer(r.json()["token"]), r.json()["region"]
    ranking = world["ranking"]
    for url, params in [("/v1/regions", {}), ("/v1/standings", {"region": region, "year": 2026}),
                        (f"/v1/standings/{A_COUNTY}", {"year": 2026}),
                        (f"/v1/standings/{A_COUNTY}/history", {"year": 2026}),
                        (f"/v1/dashboard/county/{A_COUNTY}", {"year": 2026})]:
        got = ranking.get(url, params=params, headers=key)
        assert got.status_code == 200, (url, got.text)


# --- the key admin endpoints -------------------------------------------------------------------------------


def test_keys_are_shown_once_stored_as_hashes_and_revocable(world, access):
    intake, admin = world["intake"], world["admin"]
    r = intake.post("/v1/keys", json={"name": "凉山州 dashboard", "scopes": ["standings:read"], "region": A_PREF},
                    headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    token = created["token"]
    with Session(access.engine) as s:
        row = s.get(ApiKey, created["id"])
    assert token not in orjson.dumps(row.model_dump(), default=str).decode()
    assert row.secret_hash == hashlib.sha256(token.split("_", 2)[2].encode()).hexdigest()
    listed = intake.get("/v1/keys", headers=admin).json()
    assert created["id"] in {k["id"] for k in listed} and all("token" not in k for k in listed)
    assert intake.get(f"/v1/keys/{created['id']}", headers=admin).json()["region"] == A_PREF
    ok = world["ranking"].get("/v1/standings", params={"region": A_PREF, "year": 2026}, headers=bearer(token))
    assert ok.status_code == 200 and ok.json()["items"][0]["region_code"] == A_COUNTY
    assert intake.delete(f"/v1/keys/{created['id']}", headers=admin).json()["revoked_at"]
    # revoked: refused at once by the process that revoked it (others: within the cache time)
    assert intake.get("/v1/regions", headers=bearer(token)).status_code == 401


def test_a_prefecture_admin_makes_keys_only_inside_its_region_and_scopes(world, access):
    intake = world["intake"]
    pref_admin = bearer(access.key(["admin"], A_PREF))
    r = intake.post("/v1/keys", json={"name": "县", "scopes": ["events:write"], "region": A_COUNTY}, headers=pref_admin)
    assert r.status_code == 201
    assert intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": "510000"},
                       headers=pref_admin).status_code == 403
    limited = bearer(access.key(["admin"], A_PREF))
    county_key = bearer(r.json()["token"])
    assert intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": A_COUNTY},
                       headers=county_key).status_code == 403  # not an admin
    bad = intake.post("/v1/keys", json={"name": "", "scopes": ["root"], "region": "5134", "rate_limit_per_min": 0},
                      headers=limited)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"name", "scopes", "region", "rate_limit_per_min"}


def test_a_key_cannot_be_made_already_expired(world, access):
    intake, admin = world["intake"], world["admin"]
    before = [k.id for k in access.store.list("510000")]
    unix_next_year = int((datetime.now(timezone.utc) + timedelta(days=365)).timestamp())  # ISO text only
    for past in ["2000-01-01T00:00:00Z", (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat(),
                 "2030-01-01T00:00:00", unix_next_year, str(unix_next_year)]:
        r = intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": A_PREF,
                                          "expires_at": past}, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert [e["field"] for e in r.json()["errors"]] == ["expires_at"]
    assert [k.id for k in access.store.list("510000")] == before  # nothing was made
    later = (datetime.now(timezone.utc) + timedelta(days=30)).isoformat()
    r = intake.post("/v1/keys", json={"name": "x", "scopes": ["events:read"], "region": A_PREF, "expires_at": later},
                    headers=admin)
    assert r.status_code == 201 and intake.get("/v1/regions", headers=bearer(r.json()["token"])).status_code == 200


def _admin(access, **limits) -> dict[str, str]:
    """An admin key of prefecture A with `limits` (expires_at, rate_limit_per_min)."""
    return bearer(access.store.create(name="narrow admin", scopes=["admin"], region=A_PREF, **limits)[1])


COUNTY_KEY = {"name": "县", "scopes": ["events:read"], "region": A_COUNTY}


def test_a_key_may_not_outlive_the_key_that_makes_it(world, access):
    intake = world["intake"]
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0)
    admin = _admin(access, expires_at=tomorrow)
    before = [k.id for k in access.store.list("510000")]
    for later in [(tomorrow + timedelta(seconds=1)).isoformat(), "2099-01-01T00:00:00Z", None]:
        r = intake.post("/v1/keys", json={**COUNTY_KEY, "expires_at": later}, headers=admin)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
        assert [e["field"] for e in r.json()["errors"]] == ["expires_at"]
        assert tomorrow.isoformat() in r.json()["detail"]  # says when the creator's key expires
    assert [k.id for k in access.store.list("510000")] == before  # nothing was made
    inherited = intake.post("/v1/keys", json=COUNTY_KEY, headers=admin)
    assert inherited.status_code == 201 and datetime.fromisoformat(inherited.json()["expires_at"]) == tomorrow
    assert intake.get("/v1/regions", headers=bearer(inherited.json()["token"])).status_code == 200
    for within in [tomorrow, tomorrow - timedelta(hours=1)]:
        r = intake.post("/v1/keys", json={**COUNTY_KEY, "expires_at": within.isoformat()}, headers=admin)
        assert r.status_code == 201 and datetime.fromisoformat(r.json()["expires_at"]) == within, r.text
    # an admin that never expires makes a key that never expires, or one that does
    forever = _admin(access)
    assert intake.post("/v1/keys", json=COUNTY_KEY, headers=forever).json()["expires_at"] is None
    r = intake.post("/v1/keys", json={**COUNTY_KEY, "expires_at": "2099-01-01T00:00:00Z"}, headers=forever)
    assert r.status_code == 201, r.text


def test_a_key_may_not_be_allowed_more_requests_than_the_key_that_makes_it(world, access):
    intake = world["intake"]
    admin = _admin(access, rate_limit_per_min=60)
    for over in [61, 10_000_000, None]:  # null: the service setting (6,000)
        r = intake.post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": over}, headers=admin)
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == ["rate_limit_per_min"]
        assert "limit of 60 requests per minute" in r.json()["detail"]
    inherited = intake.post("/v1/keys", json=COUNTY_KEY, headers=admin)
    assert inherited.status_code == 201 and inherited.json()["rate_limit_per_min"] == 60
    held = intake.get("/v1/regions", headers=bearer(inherited.json()["token"]))
    assert held.headers["RateLimit-Policy"] == '"key";q=60;w=60'  # the limit it is held to
    for within in [60, 1]:
        r = intake.post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": within}, headers=admin)
        assert r.status_code == 201 and r.json()["rate_limit_per_min"] == within, r.text
    # an admin whose limit is over the service setting: left out, the service setting
    generous = _admin(access, rate_limit_per_min=9_000)
    assert intake.post("/v1/keys", json=COUNTY_KEY, headers=generous).json()["rate_limit_per_min"] is None
    r = intake.post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": 9_001}, headers=generous)
    assert r.status_code == 422 and "limit of 9000 requests per minute" in r.json()["detail"], r.text
    # an admin without a limit of its own: left out, the service setting; any limit the API takes
    unlimited = _admin(access)
    assert intake.post("/v1/keys", json=COUNTY_KEY, headers=unlimited).json()["rate_limit_per_min"] is None
    r = intake.post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": 10_000_000}, headers=unlimited)
    assert r.status_code == 201, r.text


def test_a_narrow_admin_expiring_tomorrow_cannot_make_a_key_that_never_expires_at_10_million_a_minute(world, access):
    tomorrow = datetime.now(timezone.utc) + timedelta(days=1)
    admin = _admin(access, expires_at=tomorrow, rate_limit_per_min=60)
    r = world["intake"].post("/v1/keys", json={**COUNTY_KEY, "expires_at": None, "rate_limit_per_min": 10_000_000},
                             headers=admin)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["expires_at", "rate_limit_per_min"]  # both named


def test_the_operators_and_the_local_admin_keys_still_make_keys(world, access, tmp_path, monkeypatch, capsys):
    """`python -m services.kit.access create-key` (no expiry, no limit) and `make run`'s admin (no
    expiry, 10,000,000 a minute): what they make is bounded by nothing, or by 10,000,000, and a
    partner key made without a limit has the service setting, not the local admin's 10,000,000."""
    monkeypatch.setenv("KAOHE_DATA_DIR", str(tmp_path))  # the access database the apps read
    assert access_cli(["create-key", "--name", "ops", "--scope", "admin", "--region", "510000"]) == 0
    operator = bearer(capsys.readouterr().out.strip())
    r = world["intake"].post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": 10_000_000,
                                               "expires_at": "2099-01-01T00:00:00Z"}, headers=operator)
    assert r.status_code == 201, r.text
    local = bearer(local_keys(access.store, tmp_path / "local")["admin"])
    made = world["intake"].post("/v1/keys", json=COUNTY_KEY, headers=local)
    assert made.status_code == 201, made.text
    assert (made.json()["expires_at"], made.json()["rate_limit_per_min"]) == (None, None)
    held = world["intake"].get("/v1/regions", headers=bearer(made.json()["token"]))
    assert held.headers["RateLimit-Policy"] == '"key";q=6000;w=60'  # the service setting
    r = world["intake"].post("/v1/keys", json={**COUNTY_KEY, "rate_limit_per_min": None}, headers=local)
    assert r.status_code == 201 and r.json()["rate_limit_per_min"] is None, r.text  # null: the same


def test_expired_keys_are_refused(world, access):
    _row, token = access.store.create(name="old", scopes=["events:read"], region="510000",
                                      expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert world["intake"].get("/v1/regions", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_key_store_on_each_database(backend, tmp_path):
    with fresh_database(backend, tmp_path, "access") as db:
        store = Access(db.engine, cache_s=60)
        row, token = store.create(name="k", scopes=["scores:read", "events:read"], region=A_PREF)
        who = store.authenticate(token)
        assert who.key_id == row.id and who.scopes == {"scores:read", "events:read"} and who.region == A_PREF
        assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        assert store.authenticate("kh_nonexistent_secret") is None and store.authenticate("Bearer x") is None
        assert [k.id for k in store.list("510000")] == [row.id] and store.list(B_PREF) == []
        store.revoke(row.id)
        assert store.authenticate(token) is None  # the revoking process forgets its cache at once
        assert [k.id for k in store.list("510000", include_revoked=True)] == [row.id]


# --- idempotency -------------------------------------------------------------------------------------------


def test_the_same_idempotency_key_and_body_replays_the_first_response(client):
    event = f.inspection(f.finding())
    first = client.post("/v1/events", json=event, headers={"Idempotency-Key": "visit-1"})
    again = client.post("/v1/events", json=event, headers={"Idempotency-Key": "visit-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = client.post("/v1/events", json=f.inspection(f.finding()), headers={"Idempotency-Key": "visit-1"})
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "Idempotency-Key"
    batch = client.post("/v1/events/batch", json={"events": [event]}, headers={"Idempotency-Key": "visit-1"})
    assert batch.status_code == 422  # another route is another request
    assert client.post("/v1/events", json=event, headers={"Idempotency-Key": ""}).status_code == 422


def _holds(row: dict, secret: str) -> bool:
    """Does any column of a stored row contain `secret`?"""
    return any(secret.encode() in (v if isinstance(v, bytes) else str(v).encode()) for v in row.values())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_replayed_key_creation_makes_no_second_key_and_saves_no_token(backend, tmp_path, sqlite_intake, settings):
    with access_database(backend, tmp_path / "own") as keys, \
            TestClient(intake_app(settings, engine=sqlite_intake.engine, access=keys.store)) as intake:
        headers = {**keys.headers, "Idempotency-Key": "liangshan-dashboard"}
        body = {"name": "凉山州 dashboard", "scopes": ["standings:read"], "region": A_PREF}
        first = intake.post("/v1/keys", json=body, headers=headers)
        again = intake.post("/v1/keys", json=body, headers=headers)
        token = first.json()["token"]
        assert first.status_code == again.status_code == 201 and token.startswith("kh_"), first.text
        assert "idempotent-redacted" not in first.headers
        assert again.headers["idempotent-replayed"] == "true" and again.headers["idempotent-redacted"] == "token"
        assert again.json() == {**first.json(), "token": None}  # which key it made, without its token
        assert [k.id for k in keys.store.list(A_PREF)] == [first.json()["id"]]  # one key, not two
        rows = idempotency_records(keys.engine)
        assert len(rows) == 1 and rows[0]["status"] == 201
        assert not _holds(rows[0], token.split("_", 2)[2]), rows[0]
        assert intake.get("/v1/regions", headers=bearer(token)).status_code == 200  # the first answer's token works


def test_a_body_whose_secrets_cannot_be_taken_out_is_not_saved():
    assert _without(b'{"id": "k", "token": "kh_x_y"}', ("token",)) == (b'{"id":"k","token":null}', ["token"])
    assert _without(b'{"type": "problem"}', ("token",)) == (b'{"type": "problem"}', [])  # untouched
    assert _without(b"kh_x_y", ("token",)) == (None, []) and _without(b'["kh_x_y"]', ("token",)) == (None, [])


def test_every_post_answering_a_secret_keeps_it_out_of_idempotency_records(settings):
    """A route whose answer has a token or secret declares it ShownOnce (a new such route fails here)."""
    from services.notify.app import create_app as notify_app

    seen = 0
    for app in (intake_app(settings), scoring_app(settings), ranking_app(settings), notify_app(settings)):
        for route in (context.original_route for context in iter_route_contexts(app.routes)):
            model = getattr(route, "response_model", None)
            if "POST" not in getattr(route, "methods", ()) or not isinstance(model, type):
                continue
            secrets = {name for name in getattr(model, "model_fields", {}) if name in ("token", "secret")}
            declared = {name for dep in route.dependant.dependencies if isinstance(dep.call, ShownOnce)
                        for name in dep.call.fields}
            assert secrets <= declared, (route.path, secrets - declared)
            seen += bool(secrets)
    assert seen == 3  # POST /v1/keys, /v1/webhooks/endpoints, .../rotate-secret


def test_idempotency_keys_belong_to_one_api_key(client, access):
    other = bearer(access.key(["events:write"], "510000"))
    first = client.post("/v1/events", json=f.inspection(f.finding()), headers={"Idempotency-Key": "k"})
    second = client.post("/v1/events", json=f.inspection(f.finding()), headers={"Idempotency-Key": "k", **other})
    assert first.status_code == second.status_code == 201 and first.json()["sequence"] != second.json()["sequence"]


def test_a_request_still_running_is_409_and_a_stale_claim_is_taken_over(client, access):
    store = IdempotencyStore(Access(access.engine))
    key_id = access.store.authenticate(access.admin).key_id
    event = f.inspection(f.finding())
    body = orjson.dumps(event)
    scope = {"method": "POST", "path": "/v1/events", "query_string": b""}
    assert store.begin(key_id, "slow", fingerprint(scope, body))[0] == "started"  # as if in flight elsewhere
    r = client.post("/v1/events", content=body, headers={"Idempotency-Key": "slow", "content-type": "application/json"})
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    with Session(access.engine) as s:  # that process died: its claim lapses
        s.get(IdempotencyRecord, (key_id, "slow")).locked_until = datetime.now(timezone.utc) - timedelta(seconds=1)
        s.commit()
    r = client.post("/v1/events", content=body, headers={"Idempotency-Key": "slow", "content-type": "application/json"})
    assert r.status_code == 201


def test_idempotency_outcomes_are_kept_24_hours(client, access):
    event = f.inspection(f.finding())
    assert client.post("/v1/events", json=event, headers={"Idempotency-Key": "day"}).status_code == 201
    with Session(access.engine) as s:
        row = s.execute(select(IdempotencyRecord).where(IdempotencyRecord.idempotency_key == "day")).scalar_one()
        row.created_at = datetime.now(timezone.utc) - timedelta(hours=23)
        s.commit()
    again = client.post("/v1/events", json=event, headers={"Idempotency-Key": "day"})
    assert again.headers.get("idempotent-replayed") == "true"


def test_concurrent_requests_with_one_idempotency_key_run_once(client):
    """Threads race the same key: exactly one runs; the others see 409 or the replay."""
    event = f.inspection(f.finding())
    results: list[int] = []

    def post():
        r = client.post("/v1/events", json=event, headers={"Idempotency-Key": "race"})
        results.append((r.status_code, r.headers.get("idempotent-replayed")))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ran = [r for r in results if r == (201, None)]
    assert len(ran) == 1 and all(code in (201, 409) for code, _ in results), results


# --- rate limits -------------------------------------------------------------------------------------------


def test_a_key_over_its_rate_gets_429_with_retry_after(client, access):
    slow = bearer(access.key(["events:read"], "510000", rate_limit_per_min=3))
    seen = [client.get("/v1/regions", headers=slow) for _ in range(4)]
    assert [r.status_code for r in seen] == [200, 200, 200, 429]
    assert seen[0].headers["ratelimit-policy"] == '"key";q=3;w=60'
    assert seen[0].headers["ratelimit"].startswith('"key";r=2;t=')
    limited = seen[3]
    assert limited.headers["content-type"] == "application/problem+json"
    assert int(limited.headers["retry-after"]) >= 1 and limited.headers["ratelimit"].startswith('"key";r=0;')
    assert client.get("/v1/regions").status_code == 200  # other keys are not affected


def test_idempotent_replays_and_conflicts_count_against_the_rate_limit_once_each(client, access):
    """A replay is a request: it carries the RateLimit headers and, over the limit, gets the 429
    like any other (it used to be answered before the limiter, unlimited). A first request counts
    once, not once in the middleware and again in the route."""
    slow = bearer(access.key(["events:write"], "510000", rate_limit_per_min=3))
    event = f.inspection(f.finding())
    same = {**slow, "Idempotency-Key": "limited"}
    seen = [client.post("/v1/events", json=event, headers=same) for _ in range(3)]
    seen.append(client.post("/v1/events", json={**event, "source": "other"}, headers=same))  # reused key: 422 ...
    assert [r.status_code for r in seen] == [201, 201, 201, 429]  # ... but over the limit first
    assert [r.headers.get("idempotent-replayed") for r in seen[:3]] == [None, "true", "true"]
    assert [r.headers["ratelimit"].split(";")[1] for r in seen] == ["r=2", "r=1", "r=0", "r=0"]
    assert seen[3].headers["content-type"] == "application/problem+json" and int(seen[3].headers["retry-after"]) >= 1


def test_the_bucket_refills_over_the_window():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("k").allowed for _ in range(60))
    denied = limiter.take("k")
    assert not denied.allowed and denied.retry_after_s == 1
    now[0] += 1.0
    assert limiter.take("k").allowed and not limiter.take("k").allowed
    now[0] += 120
    assert limiter.take("k").remaining == 59


def test_rate_limit_headers_follow_the_draft_syntax():
    verdict = RateLimiter(600).take("k")
    headers = dict(verdict.headers())
    assert headers == {"RateLimit-Policy": '"key";q=600;w=60', "RateLimit": '"key";r=599;t=1'}


def test_local_keys_cover_the_regions_loaded(tmp_path, access):
    """`make run`'s keys: Sichuan's by default, a one-province file's province, the national scope for
    a file of several; kept across restarts, remade (and the old ones revoked) when the regions change."""
    provinces = national_regions()["regions"]
    hebei = [r for r in provinces if r["code"].startswith("13")]
    (tmp_path / "hebei.json").write_bytes(orjson.dumps({"regions": hebei}))
    (tmp_path / "two.json").write_bytes(orjson.dumps({"regions": hebei + shipped_regions()["regions"]}))
    assert region_of(file_regions(None)) == "510000"
    assert region_of(file_regions(tmp_path / "hebei.json")) == "130000"
    assert region_of(file_regions(tmp_path / "two.json")) == NATIONAL

    first = local_keys(access.store, tmp_path)
    assert local_keys(access.store, tmp_path) == first
    assert {access.store.authenticate(t).region for t in first.values()} == {"510000"}
    wider = local_keys(access.store, tmp_path, NATIONAL)
    assert set(wider) == set(first) == {"admin", "dashboard", "service"}
    for name, token in wider.items():
        assert token != first[name] and saved_token(tmp_path, name) == token
        assert access.store.authenticate(token).region == NATIONAL
        assert access.store.authenticate(first[name]) is None  # revoked
    assert local_keys(access.store, tmp_path, NATIONAL) == wider
