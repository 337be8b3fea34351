"""Input no service can store is refused in kit: non-UTF-8 JSON, NUL anywhere, made-up cursors,
times with no UTC equivalent. (tests/chaos/test_bad_input.py sends all of it over real HTTP.)"""

import base64
import json

import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from services.kit import pagination, problems
from services.kit.clean_input import CleanInput, body_errors, media_type_error
from services.kit.problems import Problem
from services.kit.types import IsoDateTime


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


def test_a_cursor_is_read_back_only_with_the_types_it_was_made_with():
    assert pagination.decode(pagination.encode({"after": 7}), {"after": int}) == {"after": 7}
    assert pagination.decode(pagination.encode({"rank": 1, "code": "513431"}), {"rank": int, "code": str})
    for made_up in ({"after": "7"}, {"after": None}, {"after": True}, {"after": 2**63}, {"after": 1.5}, [7], {}):
        with pytest.raises(Problem) as caught:
            pagination.decode(_cursor(made_up), {"after": int})
        assert caught.value.status == 422 and caught.value.extra["errors"][0]["field"] == "cursor"
    with pytest.raises(Problem):
        pagination.decode(_cursor({"after": "a\x00"}), {"after": str})


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_a_time_with_no_utc_equivalent_is_invalid(moment):
    with pytest.raises(ValidationError, match="out of range"):
        TypeAdapter(IsoDateTime).validate_python(moment)
    assert TypeAdapter(IsoDateTime).validate_python("9999-12-31T23:59:59+00:00").year == 9999


def test_body_errors():
    assert body_errors(b'{"a": "b"}') is None
    assert body_errors('{"a": "中"}'.encode()) is None
    assert body_errors(b'{"a": "\\\\u0000"}') is None  # an escaped backslash, then "u0000": no NUL
    assert body_errors('{"a": "b"}'.encode("utf-16"))[0] == 422
    assert body_errors('{"a": "b"}'.encode("utf-16-le"))[0] == 422  # no BOM: valid UTF-8 bytes, but NULs
    assert body_errors(b'{"a": "\xff"}')[0] == 422
    status, errors = body_errors(b'{"a": [{"b": "x\\u0000"}], "c\\u0000": 1}')
    assert status == 422 and {e["field"] for e in errors} == {"a.0.b", "c\\u0000"}


def test_a_lone_surrogate_is_named_and_a_pair_is_text():
    assert body_errors('{"a": "\\ud83d\\ude00 \U0001f600"}'.encode()) is None  # a pair, escaped and as UTF-8
    assert body_errors(b'{"a": "\\\\ud800"}') is None  # an escaped backslash, then "ud800"
    status, errors = body_errors(b'{"a": ["x\\ud800"], "k\\udc00": 1, "b": "\\ude00\\ud83d"}')  # (reversed)
    assert status == 422
    assert {(e["field"], e["pointer"], e["type"]) for e in errors} == {
        ("a.0", "/a/0", "string_surrogate"), ("k\\udc00", "/k\\udc00", "string_surrogate"),
        ("b", "/b", "string_surrogate")}
    json.dumps(errors, ensure_ascii=False).encode()  # every name and message is text the answer can carry


def test_nul_in_the_path_or_query_is_named():
    app = FastAPI()
    problems.install(app)
    app.add_middleware(CleanInput)

    @app.get("/things/{name}")
    def thing(name: str, q: str = Query("")) -> dict:
        return {"name": name, "q": q}

    @app.post("/things")
    def add(body: dict) -> dict:
        return body

    with TestClient(app) as c:
        assert c.get("/things/a?q=b").json() == {"name": "a", "q": "b"}
        r = c.get("/things/a%00b")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "path"
        r = c.get("/things/a?q=x%00")
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.q"
        assert c.post("/things", json={"x": "中"}).json() == {"x": "中"}  # the body reaches the route intact
        r = c.post("/things", json={"x": "a\x00"})
        assert r.status_code == 422 and r.headers["content-type"] == problems.MEDIA_TYPE
        assert r.json()["errors"][0]["field"] == "x"
        r = c.post("/things", content=b'{"x": "\\udfff"}', headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json()["errors"][0]["type"] == "string_surrogate"
        r = c.post("/things", content=b"[" * 100_000, headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["errors"][0]["field"] == "(body)"


@pytest.mark.parametrize("content_type, has_body, refused", [
    ("application/json", True, False), ("application/json; charset=utf-8", True, False),
    ("APPLICATION/JSON;CHARSET=\"utf-8\"", True, False), ("application/problem+json", True, False),
    (None, False, False), (None, True, True), ("text/plain", True, True), ("text/plain", False, True),
    ("application/xml", True, True), ("application/x-www-form-urlencoded", True, True), ("", True, True),
    ("application/json; charset=latin-1", True, True), ("application/json; charset=", True, True),
    ("text/json", True, True),
])
def test_what_counts_as_json(content_type, has_body, refused):
    assert (media_type_error(content_type, has_body) is not None) == refused


def test_only_routes_that_take_json_refuse_other_media_types():
    app = FastAPI()
    problems.install(app)
    app.add_middleware(CleanInput)

    @app.post("/things/{name}")
    def add(name: str, body: dict) -> dict:
        return {name: body}

    @app.post("/things/{name}/ping")
    def ping(name: str) -> dict:
        return {"pinged": name}

    with TestClient(app) as c:
        assert c.post("/things/a", json={"x": 1}).json() == {"a": {"x": 1}}
        r = c.post("/things/a", content=b'{"x": 1}', headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.headers["content-type"] == problems.MEDIA_TYPE
        assert r.json()["errors"][0]["field"] == "Content-Type" and r.headers["accept-post"] == "application/json"
        assert c.post("/things/a/ping", content=b"hello", headers={"content-type": "text/plain"}).status_code == 200
        assert c.post("/nowhere", content=b"x", headers={"content-type": "text/plain"}).status_code == 404
