"""A query parameter the route does not declare is a 422 naming it, on every service (kit.query)."""

from collections.abc import Iterator
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, Query
from fastapi.testclient import TestClient

from services.events.v1 import IDENTIFIER
from services.intake.app import create_app as intake_app
from services.kit import pagination
from services.kit.access import Principal, require
from services.kit.app import service_app
from services.kit.query import _routes
from services.notify.app import create_app as notify_app
from services.ranking.app import create_app as ranking_app
from services.scoring.app import create_app as scoring_app
from tests.conftest import bearer, fresh_database
from tests.kit.test_access import A_COUNTY, A_PREF, _seed_read_models

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def apps(tmp_path, settings, access, sqlite_intake) -> Iterator[dict[str, TestClient]]:
    """The four APIs on SQLite (scoring's and ranking's read models seeded), the province's admin key."""
    with fresh_database("sqlite", tmp_path, "scoring") as scoring_db, \
            fresh_database("sqlite", tmp_path, "ranking") as ranking_db, \
            fresh_database("sqlite", tmp_path, "notify") as notify_db:
        _seed_read_models(scoring_db.engine, ranking_db.engine)
        with TestClient(intake_app(settings, engine=sqlite_intake.engine), headers=access.headers) as intake, \
                TestClient(scoring_app(settings, engine=scoring_db.engine), headers=access.headers) as scoring, \
                TestClient(ranking_app(settings, engine=ranking_db.engine), headers=access.headers) as ranking, \
                TestClient(notify_app(settings, engine=notify_db.engine), headers=access.headers) as notify:
            yield {"intake": intake, "scoring": scoring, "ranking": ranking, "notify": notify}


def _declared(client: TestClient, path: str, method: str = "get") -> list[str]:
    """The query parameters the route's OpenAPI operation lists, in its order."""
    operation = client.app.openapi()["paths"][path][method]
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]


TYPOS = [  # service, OpenAPI path, URL, query, what must be named (the typo and what it left missing)
    ("intake", "/v1/findings", "/v1/findings", {"region_code": A_COUNTY, "stat": "open"}, {"query.stat"}),
    ("intake", "/v1/regions", "/v1/regions", {"levl": "county"}, {"query.levl"}),
    ("scoring", "/v1/scores/{region_code}", f"/v1/scores/{A_COUNTY}", {"yaer": 2026},
     {"query.yaer", "query.year"}),
    ("ranking", "/v1/standings", "/v1/standings", {"prefcture": A_PREF, "region": "510000", "year": 2026},
     {"query.prefcture"}),
    ("notify", "/v1/webhooks/endpoints", "/v1/webhooks/endpoints", {"limt": 5}, {"query.limt"}),
]


@pytest.mark.parametrize(("service", "path", "url", "query", "named"), TYPOS, ids=[t[1] for t in TYPOS])
def test_a_typo_in_a_query_parameter_is_a_422_naming_it_and_what_the_route_takes(apps, service, path, url, query,
                                                                                  named):
    client = apps[service]
    r = client.get(url, params=query)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, r.text
    problem = r.json()
    assert {e["field"] for e in problem["errors"]} == named, problem
    typo = next(e for e in problem["errors"] if e["type"] == "extra_forbidden")
    assert typo["pointer"] == "/query/" + typo["field"].removeprefix("query.")
    declared = _declared(client, path)
    assert declared and f"GET {path} takes {', '.join(declared)}" in problem["detail"], problem["detail"]
    assert all(name in typo["message"] for name in declared)


def test_every_unknown_parameter_is_named_once_with_the_invalid_declared_ones(apps):
    r = apps["ranking"].get("/v1/standings", params=[("regoin", "510000"), ("year", "abc"), ("yaer", "2026"),
                                                      ("regoin", "510100"), ("limit", "0")])
    assert r.status_code == 422, r.text
    fields = [e["field"] for e in r.json()["errors"]]
    assert sorted(fields) == ["query.limit", "query.region", "query.regoin", "query.yaer", "query.year"]
    assert r.json()["detail"].startswith("unknown query parameters regoin, yaer: GET /v1/standings takes region, ")


def test_a_route_without_query_parameters_says_so(apps):
    for service, url in [("scoring", "/v1/policies"), ("intake", "/healthz"), ("ranking", "/metrics")]:
        r = apps[service].get(url, params={"verbose": "1"})
        assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, (service, url, r.text)
        assert r.json()["errors"][0]["field"] == "query.verbose"
        assert r.json()["detail"] == f"unknown query parameter verbose: GET {url} takes no query parameters"


def test_every_operation_documents_the_422_even_without_parameters(apps):
    """Any route may answer a 422 now (an undeclared query parameter): its OpenAPI says so, as
    problem+json, including the routes that take no parameter at all (e.g. GET /v1/policies)."""
    bare = 0
    for service, client in apps.items():
        for path, operations in client.app.openapi()["paths"].items():
            for method, operation in operations.items():
                bare += not operation.get("parameters") and not operation.get("requestBody")
                documented = operation["responses"].get("422", {})
                assert PROBLEM_JSON in documented.get("content", {}), (service, method, path)
    assert bare > 0  # the case this is about exists


def test_a_name_is_escaped_in_the_pointer(apps):
    r = apps["intake"].get("/v1/regions", params={"a/b~c": "1"})
    assert r.json()["errors"] == [{"field": "query.a/b~c", "pointer": "/query/a~1b~0c", "type": "extra_forbidden",
                                   "message": "not a query parameter of GET /v1/regions, which takes level, parent, "
                                              "status"}]


def test_the_key_is_checked_first(apps, access):
    scoring, url, typo = apps["scoring"], f"/v1/scores/{A_COUNTY}", {"year": 2026, "yaer": 2026}
    assert scoring.get(url, params=typo, headers={"Authorization": ""}).status_code == 401
    standings_only = bearer(access.key(["standings:read"], "510000"))
    assert scoring.get(url, params=typo, headers=standings_only).status_code == 403
    assert scoring.get(url, params=typo).status_code == 422
    # the stream's key in the query string: declared there, a typo beside it named once the key is in
    stream = apps["ranking"].get("/v1/standings/stream", headers={"Authorization": ""},
                                 params={"access_token": access.admin, "regoin": A_PREF, "region": "999999"})
    assert stream.status_code == 422 and [e["field"] for e in stream.json()["errors"]] == ["query.regoin"]
    # elsewhere access_token is not a parameter: without a header the key is missing, with one it is unknown
    other = {"region": "510000", "year": 2026, "access_token": access.admin}
    assert apps["ranking"].get("/v1/standings", params=other, headers={"Authorization": ""}).status_code == 401
    r = apps["ranking"].get("/v1/standings", params=other)
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["query.access_token"]


def test_a_post_with_an_unknown_parameter_changes_nothing(apps, access):
    intake = apps["intake"]
    before = intake.get("/v1/keys").json()
    r = intake.post("/v1/keys", params={"expires": "never"},
                    json={"name": "x", "scopes": ["events:read"], "region": A_PREF})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["query.expires"]
    assert intake.get("/v1/keys").json() == before


def test_every_declared_parameter_still_works(apps, access):
    intake, scoring, ranking, notify = apps["intake"], apps["scoring"], apps["ranking"], apps["notify"]
    first = ranking.get("/v1/standings", params={"region": "510000", "year": 2026, "limit": 1}).json()
    every = {"region": "510000", "year": 2026, "level": "county", "league": "in_poverty",
             "as_of": "2027-01-11T00:00:00+08:00", "cursor": first["next_cursor"], "limit": 1}
    assert first["next_cursor"] and set(every) == set(_declared(ranking, "/v1/standings"))
    r = ranking.get("/v1/standings", params=every)
    assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
    asked = {"year": 2026, "cursor": pagination.encode({"batch": 0, "line": 0}), "limit": 5}
    assert set(asked) == set(_declared(scoring, "/v1/scores/{region_code}/explanation"))
    assert scoring.get(f"/v1/scores/{A_COUNTY}/explanation", params=asked).status_code == 200
    regions = {"level": "county", "parent": A_PREF, "status": "in_poverty"}
    assert set(regions) == set(_declared(intake, "/v1/regions"))
    r = intake.get("/v1/regions", params=regions)
    assert r.status_code == 200 and r.json(), r.text
    listed = {"cursor": pagination.encode({"id": ""}), "limit": 5}
    assert set(listed) == set(_declared(notify, "/v1/webhooks/endpoints"))
    assert notify.get("/v1/webhooks/endpoints", params=listed).status_code == 200
    # the stream takes its key and a region as query parameters (an unknown region: a 404, not a stream)
    r = ranking.get("/v1/standings/stream", params={"access_token": access.admin, "region": "999999"},
                    headers={"Authorization": ""})
    assert r.status_code == 404, r.text
    # the dashboard's page reads ?key= and ?year= in the browser
    assert ranking.get("/", params={"key": access.admin, "year": 2026}).status_code == 200


def test_a_parameter_given_more_than_once_is_a_422_naming_it(apps):
    """FastAPI reads the last value of a repeated parameter and ignores the others, whatever they
    hold (schemathesis sent `after_sequence` thirteen times, twelve of them not numbers, and got
    the export): refused, as an undeclared one is."""
    r = apps["scoring"].get(f"/v1/scores/{A_COUNTY}", params=[("year", "2025"), ("year", "2026")])
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM_JSON, r.text
    assert r.json()["errors"] == [{"field": "query.year", "pointer": "/query/year", "type": "repeated",
                                   "message": "given 2 times: it takes one value"}]
    assert r.json()["detail"] == "given more than once: year (each takes one value)"
    r = apps["intake"].get("/v1/events/export", params=[("after_sequence", "x"), ("after_sequence", "0")])
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["query.after_sequence"], r.text
    # with an unknown one and an invalid one: each named once
    r = apps["ranking"].get("/v1/standings", params=[("region", "510000"), ("region", "510100"), ("year", "abc"),
                                                      ("yaer", "2026")])
    assert r.status_code == 422, r.text
    assert sorted((e["field"], e["type"]) for e in r.json()["errors"]) == [
        ("query.region", "repeated"), ("query.yaer", "extra_forbidden"), ("query.year", "int_parsing")]
    # once each, as before
    assert apps["scoring"].get(f"/v1/scores/{A_COUNTY}", params={"year": "2026"}).status_code == 200


def test_what_each_route_takes_is_what_its_openapi_lists(apps):
    """The check and the OpenAPI come from the same declarations: no route refuses what it documents."""
    for service, client in apps.items():
        client.get("/healthz", params={"x": "1"})  # builds the app's table
        takes = {t.route: t.names for t in _routes(client.app).values()}
        for path, operations in client.app.openapi()["paths"].items():
            for method in operations:
                assert takes[f"{method.upper()} {path}"] == tuple(_declared(client, path, method)), (service, path)


def test_a_dependencys_parameters_are_the_routes_too_and_named_with_the_unknown_ones(settings, access):
    """An app of the kit's own (not one of the services): a parameter declared by a dependency."""
    router = APIRouter()

    def page(size: Annotated[int, Query(ge=1)] = 10) -> int:
        return size

    @router.get("/things")
    def things(size: Annotated[int, Depends(page)],
               principal: Annotated[Principal, Depends(require("events:read"))]) -> dict:
        return {"size": size}

    app = service_app(title="Kaohe test", description="", settings=settings, access=access.store)
    app.include_router(router)
    with TestClient(app, headers=access.headers) as client:
        assert client.get("/things", params={"size": 3}).json() == {"size": 3}
        r = client.get("/things", params={"size": 0, "szie": 3})
        assert r.status_code == 422, r.text
        assert sorted(e["field"] for e in r.json()["errors"]) == ["query.size", "query.szie"]
        assert client.get("/things", params={"szie": 3}, headers={"Authorization": ""}).status_code == 401


def test_a_team_id_is_asked_for_in_the_shape_events_give_it(apps):
    """`GET /v1/inspector-points?team_id=`: the contract's identifier (services/events/v1.py), in
    the OpenAPI too, so that a client (schemathesis) knows which ids are refused before asking."""
    scoring = apps["scoring"]
    (team,) = [p for p in scoring.app.openapi()["paths"]["/v1/inspector-points"]["get"]["parameters"]
               if p["name"] == "team_id"]
    assert team["schema"]["pattern"] == IDENTIFIER
    for bad in ("a b", "-t", "t\u00e9", "x" * 65):
        r = scoring.get("/v1/inspector-points", params={"team_id": bad})
        assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["query.team_id"], (bad, r.text)
    r = scoring.get("/v1/inspector-points", params={"team_id": "team-1.a:b_c"})
    assert r.status_code == 404 and r.headers["content-type"] == PROBLEM_JSON, r.text  # none recorded
