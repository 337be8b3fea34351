"""Chaos: bad input at every API, over real HTTP (uvicorn parses it), on SQLite and PostgreSQL.

Hand-written cases next to tests/test_fuzz.py's schemathesis run (which this does not repeat):
huge bodies, deeply nested JSON, wrong encodings and content types (a 415 naming Content-Type),
NUL characters, far-future and far-past timestamps, naive ones, unknown enum values, wrong types,
nulls, NaN/Infinity, overlong strings, made-up cursors, ids past 64 bits, path traversal in region
codes. Every one must get a 4xx application/problem+json naming the offending field(s) (never a
500), and nothing stored may change: intake's hash chain and export, and every row of the scoring,
ranking, notify and access databases are compared before and after. The chaos table gets one row
per backend (sent = bad requests, lost = stored things that changed, doubled = bad requests accepted).
"""

import base64
import copy
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import MetaData, select
from sqlmodel import Session

from services.intake.app import create_app as intake_app
from services.intake.regions.service import load
from services.kit.settings import Settings
from services.notify.app import create_app as notify_app
from services.ranking.app import create_app as ranking_app
from services.scoring.app import create_app as scoring_app
from tests import factories as f
from tests.chaos import report
from tests.conftest import Keys, bearer, fresh_database
from tests.http_helpers import serve
from tests.kit.test_access import A_COUNTY, _seed_read_models

FULL = os.environ.get("KAOHE_CHAOS") == "1"
HUGE = (100 if FULL else 20) * 1024 * 1024  # well past KAOHE_MAX_BODY_BYTES (8 MiB)
DEPTH = 1_000_000 if FULL else 100_000
JSON = {"content-type": "application/json"}


@dataclass
class Case:
    name: str
    service: str
    method: str
    path: str
    fields: set[str] = field(default_factory=set)  # each must be named in `errors` (empty: a whole-request problem)
    json: Any = None
    content: Any = None
    headers: Any = None
    batch_items: bool = False  # a batch whose items are each refused: 200 with every item rejected
    status: int | None = None  # the status it must get, where only one is right


def _event(**changes: Any) -> dict[str, Any]:
    """A valid inspection with `changes` applied at dotted paths ("payload.findings.0.severity")."""
    event = copy.deepcopy(f.inspection(f.finding(), region=A_COUNTY))
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = event
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return event


def _raw(event: dict[str, Any], old: bytes, new: bytes) -> bytes:
    body = orjson.dumps(event)
    assert old in body
    return body.replace(old, new, 1)


def cases(endpoint_id: str) -> list[Case]:
    ev = "/v1/events"
    nested_array = b"[" * DEPTH + b"]" * DEPTH
    nested_object = b'{"a":' * DEPTH + b"1" + b"}" * DEPTH
    valid = _event()
    out = [
        # size and shape of the body
        Case("huge body (Content-Length)", "intake", "POST", ev, content=b"x" * HUGE, headers=JSON),
        Case("huge body (chunked)", "intake", "POST", ev, content=iter([b"x" * (1024 * 1024)] * (HUGE // 2**20)),
             headers=JSON),
        Case("huge body on scoring", "scoring", "POST", "/v1/policies", content=b"[" * HUGE, headers=JSON),
        Case("huge body on notify", "notify", "POST", "/v1/webhooks/endpoints", content=b" " * HUGE, headers=JSON),
        Case(f"JSON nested {DEPTH:,} arrays deep", "intake", "POST", ev, {"(body)"}, content=nested_array,
             headers=JSON),
        Case(f"JSON nested {DEPTH:,} objects deep", "intake", "POST", f"{ev}/batch", {"(body)"},
             content=nested_object, headers=JSON),
        Case("nested JSON on scoring", "scoring", "POST", "/v1/policies", {"(body)"}, content=nested_array,
             headers=JSON),
        Case("nested JSON on notify", "notify", "POST", "/v1/webhooks/endpoints", {"(body)"},
             content=nested_object, headers=JSON),
        Case("nested JSON on keys", "intake", "POST", "/v1/keys", {"(body)"}, content=nested_array, headers=JSON),
        Case("truncated JSON", "intake", "POST", ev, {"(body)"}, content=orjson.dumps(valid)[:-7], headers=JSON),
        Case("empty body", "intake", "POST", ev, {"(body)"}, content=b"", headers=JSON),
        Case("a JSON array, not an object", "intake", "POST", ev, {"(body)"}, json=[valid]),
        # encodings and content types
        Case("invalid UTF-8", "intake", "POST", ev, {"(body)"}, content=_raw(valid, b'"tests"', b'"\xff\xfe"'),
             headers=JSON),
        Case("latin-1 body, charset=latin-1", "intake", "POST", ev, {"Content-Type"},
             content=_raw(valid, b'"tests"', "\"caf\u00e9\"".encode("latin-1")),
             headers={"content-type": "application/json; charset=latin-1"}, status=415),
        Case("UTF-16 body", "intake", "POST", ev, {"(body)"}, content=json.dumps(_event()).encode("utf-16"),
             headers=JSON),
        Case("UTF-16 body, charset=utf-16", "intake", "POST", ev, {"Content-Type"},
             content=json.dumps(_event()).encode("utf-16-le"),
             headers={"content-type": "application/json; charset=utf-16"}, status=415),
        Case("UTF-32 policy", "scoring", "POST", "/v1/policies", {"(body)"},
             content=json.dumps({"id": "x"}).encode("utf-32"), headers=JSON),
        # a valid body under another media type: 415 naming the header, on every service
        Case("text/plain", "intake", "POST", ev, {"Content-Type"}, content=orjson.dumps(_event()),
             headers={"content-type": "text/plain"}, status=415),
        Case("application/xml batch", "intake", "POST", f"{ev}/batch", {"Content-Type"},
             content=orjson.dumps({"events": [_event()]}), headers={"content-type": "application/xml"}, status=415),
        Case("no content-type", "intake", "POST", ev, {"Content-Type"}, content=orjson.dumps(_event()), status=415),
        Case("text/plain key", "intake", "POST", "/v1/keys", {"Content-Type"},
             content=orjson.dumps({"name": "k", "scopes": ["events:read"], "region": "513400"}),
             headers={"content-type": "text/plain"}, status=415),
        Case("text/plain policy", "scoring", "POST", "/v1/policies", {"Content-Type"}, content=b'{"id": "x"}',
             headers={"content-type": "text/plain"}, status=415),
        Case("form-encoded", "notify", "POST", "/v1/webhooks/endpoints", {"Content-Type"},
             content=b"url=http%3A%2F%2Fexample.com", headers={"content-type": "application/x-www-form-urlencoded"},
             status=415),
        Case("text/plain endpoint patch", "notify", "PATCH", f"/v1/webhooks/endpoints/{endpoint_id}",
             {"Content-Type"}, content=b'{"enabled": false}', headers={"content-type": "text/plain"}, status=415),
        Case("gzip content-encoding (not decoded)", "intake", "POST", ev, {"(body)"},
             content=b"\x1f\x8b\x08\x00" + b"\x00" * 20, headers={**JSON, "content-encoding": "gzip"}),
        Case("NUL in a string", "intake", "POST", ev, {"source"}, json=_event(source="a\x00b")),
        Case("NUL deep in the payload", "intake", "POST", ev, {"payload.findings.0.description"},
             json=_event(**{"payload.findings.0.description": "x\x00"})),
        Case("NUL in a batch item", "intake", "POST", f"{ev}/batch", {"events.0.payload.team_id"},
             json={"events": [_event(**{"payload.team_id": "t\x00"})]}),
        Case("NUL in a key name", "intake", "POST", "/v1/keys", {"name"},
             json={"name": "a\x00b", "scopes": ["events:read"], "region": "513400"}),
        Case("NUL in an endpoint URL", "notify", "POST", "/v1/webhooks/endpoints", {"url"},
             json={"url": "http://127.0.0.1:9/\x00"}),
        Case("a lone surrogate in a batch item", "intake", "POST", f"{ev}/batch", {"events.0.source"}, headers=JSON,
             content=b'{"events": [' + _raw(valid, b'"tests"', b'"x\\udfff"') + b"]}"),
        Case("a lone surrogate in a policy", "scoring", "POST", "/v1/policies", {"id"}, headers=JSON,
             content=b'{"id": "\\udbff"}'),
        Case("NUL in a path", "intake", "GET", "/v1/findings/a%00b", {"path"}),
        Case("NUL in a policy id", "scoring", "GET", "/v1/policies/a%00b", {"path"}),
        Case("NUL in a query", "scoring", "GET", "/v1/inspector-points?team_id=a%00b", {"query.team_id"}),
        Case("lone surrogate", "intake", "POST", ev, {"source"}, content=_raw(_event(), b'"tests"', b'"\\ud800"'),
             headers=JSON),
        # timestamps
        *[Case(f"occurred_at {t}", "intake", "POST", ev, {"occurred_at"}, json=_event(occurred_at=t)) for t in (
            "9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+00:00",
            "0001-01-01T00:00:00+14:00", "1970-01-01T00:00:00Z", "2026-03-02T09:30:00", "2026-02-30T00:00:00Z",
            "10000-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "", 1e20, None)],
        Case("deadline in year 1", "intake", "POST", ev, {"payload.findings.0.deadline"},
             json=_event(**{"payload.findings.0.deadline": "0001-01-01"})),
        Case("deadline not a date", "intake", "POST", ev, {"payload.findings.0.deadline"},
             json=_event(**{"payload.findings.0.deadline": "next tuesday"})),
        Case("deadline in year 9999", "intake", "POST", ev, {"payload.findings.0.deadline"},
             json=_event(**{"payload.findings.0.deadline": "9999-12-31"})),
        Case("occurred_at in 2099 and a bad count", "intake", "POST", ev, {"occurred_at", "payload.villages_sampled"},
             json=_event(occurred_at="2099-01-01T00:00:00Z", **{"payload.villages_sampled": -1})),
        Case("a boolean count", "intake", "POST", ev, {"payload.villages_sampled"},
             json=_event(**{"payload.villages_sampled": True})),
        Case("fewer households than villages", "intake", "POST", ev, {"payload.households_sampled"},
             json=_event(**{"payload.households_sampled": 5})),
        *[Case(f"since={t}", "intake", "GET", f"{ev}?since={t}", {"query.since"}) for t in (
            "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00%2B14:00", "2026-01-01T00:00:00", "1700000000")],
        *[Case(f"as_of={t}", "ranking", "GET", f"/v1/standings?region=510000&year=2026&as_of={t}", {"query.as_of"})
          for t in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00%2B01:00", "2026-01-01T00:00:00")],
        Case("history since past 9999 in UTC", "ranking", "GET",
             f"/v1/standings/{A_COUNTY}/history?year=2026&since=9999-12-31T23:59:59-14:00", {"query.since"}),
        Case("replay since past 9999 in UTC", "notify", "POST", f"/v1/webhooks/endpoints/{endpoint_id}/replay-failed",
             {"since"}, json={"since": "9999-12-31T23:59:59-14:00"}),
        Case("replay since naive", "notify", "POST", f"/v1/webhooks/endpoints/{endpoint_id}/replay-failed",
             {"since"}, json={"since": "2026-01-01T00:00:00"}),
        # enums, types, nulls, numbers, lengths
        Case("unknown event type", "intake", "POST", ev, {"type"}, json=_event(type="inspection.deleted")),
        Case("unknown schema_version", "intake", "POST", ev, {"schema_version"}, json=_event(schema_version=99)),
        Case("unknown severity", "intake", "POST", ev, {"payload.findings.0.severity"},
             json=_event(**{"payload.findings.0.severity": "apocalyptic"})),
        Case("unknown category", "intake", "POST", ev, {"payload.findings.0.category"},
             json=_event(**{"payload.findings.0.category": "astrology"})),
        Case("unknown mode", "intake", "POST", ev, {"payload.mode"}, json=_event(**{"payload.mode": "psychic"})),
        Case("two bad fields at once", "intake", "POST", ev, {"payload.mode", "payload.findings.0.severity"},
             json=_event(**{"payload.mode": "psychic", "payload.findings.0.severity": 3})),
        Case("unknown field", "intake", "POST", ev, {"payload.surprise"}, json=_event(**{"payload.surprise": 1})),
        Case("number as a string", "intake", "POST", ev, {"payload.villages_sampled"},
             json=_event(**{"payload.villages_sampled": "ten"})),
        Case("null count", "intake", "POST", ev, {"payload.villages_sampled"},
             json=_event(**{"payload.villages_sampled": None})),
        Case("null payload", "intake", "POST", ev, {"payload"}, json=_event(payload=None)),
        Case("count past 64 bits", "intake", "POST", ev, {"payload.villages_sampled"},
             json=_event(**{"payload.villages_sampled": 10**30})),
        *[Case(f"{word} count", "intake", "POST", ev, {"payload.villages_sampled"},
               content=_raw(_event(), b'"villages_sampled":10', b'"villages_sampled":' + word), headers=JSON)
          for word in (b"NaN", b"Infinity", b"-Infinity", b"1e400")],
        Case("overlong source", "intake", "POST", ev, {"source"}, json=_event(source="x" * 1_000_000)),
        Case("overlong description", "intake", "POST", ev, {"payload.findings.0.description"},
             json=_event(**{"payload.findings.0.description": "描" * 100_000})),
        Case("event_id not a UUID", "intake", "POST", ev, {"event_id"}, json=_event(event_id="not-a-uuid")),
        Case("batch not a list", "intake", "POST", f"{ev}/batch", {"events"}, json={"events": "all"}),
        Case("batch of 1,001", "intake", "POST", f"{ev}/batch", {"events"}, json={"events": [valid] * 1001}),
        Case("batch of bad items", "intake", "POST", f"{ev}/batch", batch_items=True, json={"events": [
            1, None, "x", [], _event(occurred_at="9999-12-31T23:59:59-14:00"), _event(type="x"),
            _event(**{"payload.findings.0.severity": "x"})]}),
        Case("key with unknown scope", "intake", "POST", "/v1/keys", {"scopes", "region"},
             json={"name": "k", "scopes": ["godmode"], "region": "../.."}),
        Case("policy of the wrong shape", "scoring", "POST", "/v1/policies", {"id"}, json={"id": 7}),
        Case("policy NaN", "scoring", "POST", "/v1/policies", {"id"}, content=b'{"id": NaN}', headers=JSON),
        Case("endpoint with unknown event type", "notify", "POST", "/v1/webhooks/endpoints", {"event_types.0"},
             json={"url": "ftp://x", "event_types": ["everything"]}),
        Case("endpoint URL 100,000 long", "notify", "POST", "/v1/webhooks/endpoints", {"url"},
             json={"url": "https://" + "a" * 100_000 + ".cn/"}),
        Case("endpoint enabled=maybe", "notify", "PATCH", f"/v1/webhooks/endpoints/{endpoint_id}", {"enabled"},
             json={"enabled": "maybe"}),
        # query parameters
        Case("year=abc", "scoring", "GET", f"/v1/scores/{A_COUNTY}?year=abc", {"query.year"}),
        Case("year=99999", "scoring", "GET", f"/v1/scores/{A_COUNTY}?year=99999", {"query.year"}),
        Case("year missing", "ranking", "GET", "/v1/standings?region=510000", {"query.year"}),
        Case("unknown league", "ranking", "GET", "/v1/standings?region=510000&year=2026&league=premier",
             {"query.league"}),
        Case("unknown level", "ranking", "GET", "/v1/standings?region=510000&year=2026&level=village",
             {"query.level"}),
        Case("unknown finding state", "intake", "GET", "/v1/findings?state=lost", {"query.state"}),
        Case("unknown severity filter", "intake", "GET", "/v1/findings?severity=x", {"query.severity"}),
        Case("unknown region level", "intake", "GET", "/v1/regions?level=village", {"query.level"}),
        Case("unknown delivery status", "notify", "GET", f"/v1/webhooks/endpoints/{endpoint_id}/messages?status=x",
             {"query.status"}),
        *[Case(f"limit={n}", svc, "GET", f"{path}{'&' if '?' in path else '?'}limit={n}", {"query.limit"})
          for n in ("-1", "0", "100000000", "99999999999999999999999", "abc")
          for svc, path in (("intake", ev), ("ranking", "/v1/standings?region=510000&year=2026"),
                            ("notify", "/v1/webhooks/endpoints"))],
        Case("after_sequence past 64 bits", "intake", "GET", f"{ev}/export?after_sequence=9223372036854775808",
             {"query.after_sequence"}),
        Case("after_sequence negative", "intake", "GET", f"{ev}/export?after_sequence=-1", {"query.after_sequence"}),
        # query parameters no route declares: named, and a POST carrying one changes nothing
        Case("a typo in a required parameter", "scoring", "GET", f"/v1/scores/{A_COUNTY}?yaer=2026",
             {"query.yaer", "query.year"}),
        Case("a made-up filter", "ranking", "GET", "/v1/standings?region=510000&year=2026&prefcture=513400",
             {"query.prefcture"}),
        Case("access_token off the stream", "ranking", "GET", "/v1/standings?region=510000&year=2026&access_token=x",
             {"query.access_token"}),
        Case("a made-up parameter on a valid event", "intake", "POST", f"{ev}?dry_run=1", {"query.dry_run"},
             json=_event()),
        Case("a made-up parameter on a valid key", "intake", "POST", "/v1/keys?expires=never", {"query.expires"},
             json={"name": "x", "scopes": ["events:read"], "region": A_COUNTY}),
        Case("a made-up parameter on a valid endpoint", "notify", "POST", "/v1/webhooks/endpoints?secret=x",
             {"query.secret"}, json={"url": "http://127.0.0.1:9/other"}),
        Case("rebuild id past 64 bits", "scoring", "GET", "/v1/rebuilds/9223372036854775808", {"path.rebuild_id"}),
        Case("rebuild id 10^23", "scoring", "GET", "/v1/rebuilds/99999999999999999999999", {"path.rebuild_id"}),
    ]
    # cursors a client made up: garbage, wrong shapes, wrong types, past 64 bits, NUL
    made_up = ["garbage", "%25%25%25", "A" * 4000, encode({"after": "abc"}), encode({"after": None}),
               encode({"after": 1e300}), encode({"after": 2**63}), encode({"after": {"a": 1}}), encode({"after": True}),
               encode({"rank": "a", "code": 1}), encode({"rank": None, "code": None}),
               encode({"rank": 2**63, "code": ""}), encode({"id": "a\x00"}), encode({"id": 2**64}), encode([1])]
    paged = [("intake", ev), ("intake", "/v1/findings"), ("scoring", f"/v1/scores/{A_COUNTY}/explanation?year=2026"),
             ("ranking", "/v1/standings?region=510000&year=2026"), ("notify", "/v1/webhooks/endpoints"),
             ("notify", f"/v1/webhooks/endpoints/{endpoint_id}/messages"),
             ("notify", f"/v1/webhooks/endpoints/{endpoint_id}/attempts")]
    for service, path in paged:
        for i, cursor in enumerate(made_up):
            out.append(Case(f"made-up cursor #{i} on {path}", service, "GET",
                            f"{path}{'&' if '?' in path else '?'}cursor={cursor}", {"cursor"}))
    # path traversal and look-alikes in region codes
    for code in ("..%2F..%2Fetc%2Fpasswd", "..%5C..%5Cwin.ini", "513431%2F..", "%2E%2E", "51343%00",
                 "\uff15\uff11\uff13\uff14\uff13\uff11", "5134311", "-13431"):
        in_path = "path" if "%00" in code else None  # NUL is refused before routing: the path is named
        out.append(Case(f"region {code} (scores)", "scoring", "GET", f"/v1/scores/{code}?year=2026",
                        {in_path or "path.region_code"}))
        out.append(Case(f"region {code} (standings)", "ranking", "GET", f"/v1/standings?region={code}&year=2026",
                        {"query.region"}))
        out.append(Case(f"region {code} (regions)", "intake", "GET", f"/v1/regions/{code}", {in_path or "path.code"}))
        out.append(Case(f"region_code {code} in an event", "intake", "POST", ev, {"region_code"},
                        json=_event(region_code=httpx.URL(f"/{code}").path[1:])))
    return out


def encode(position: Any) -> str:
    """A cursor as the APIs make them (base64 of JSON), of anything a client may put in one."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _named(errors: Any) -> set[str]:
    return {e.get("field") for e in errors or [] if isinstance(e, dict)}


def check(case: Case, response: httpx.Response) -> str | None:
    """What is wrong with the answer to a bad request, or None."""
    where = f"{case.name}: {case.method} {case.path[:120]} → {response.status_code}"
    if case.batch_items:
        body = response.json()
        if response.status_code != 200 or body["accepted"] or body["duplicates"]:
            return f"{where}: {response.text[:300]}"
        unnamed = [r for r in body["results"] if r["status"] != "rejected" or not _named(r["problem"].get("errors"))]
        return f"{where}: items without a named field: {unnamed}" if unnamed else None
    if not 400 <= response.status_code < 500 or case.status not in (None, response.status_code):
        return f"{where}: {response.text[:300]}"
    if response.headers.get("content-type") != "application/problem+json":
        return f"{where}: content-type {response.headers.get('content-type')}: {response.text[:200]}"
    problem = response.json()
    if problem.get("status") != response.status_code or not problem.get("type") or not problem.get("title"):
        return f"{where}: not an RFC 9457 problem: {problem}"
    if response.status_code == 404 and problem["type"].endswith(":http-404"):
        return None  # no route has such a path (a decoded %2F): nothing to name but the path itself
    missing = case.fields - _named(problem.get("errors"))
    if missing:
        return f"{where}: does not name {sorted(missing)}: {response.text[:400]}"
    return None


def _tables(engine) -> dict[str, str]:
    """A digest of every row of every table (what "nothing stored changed" compares)."""
    meta = MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for name, table in sorted(meta.tables.items()):
            rows = sorted(repr(tuple(r)) for r in conn.execute(select(table)))
            out[name] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory, broker) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    keys = Keys(tmp)
    settings = Settings(data_dir=tmp, kafka_bootstrap_servers=broker.bootstrap_servers, service_token=keys.admin,
                        notify_allow_private_urls=True)
    backend = request.param
    with fresh_database(backend, tmp, "intake") as intake_db, fresh_database(backend, tmp, "scoring") as scoring_db, \
            fresh_database(backend, tmp, "ranking") as ranking_db, fresh_database(backend, tmp, "notify") as notify_db:
        with Session(intake_db.engine) as s:
            load(session=s)
            s.commit()
        _seed_read_models(scoring_db.engine, ranking_db.engine)
        with serve(intake_app(settings, engine=intake_db.engine, access=keys.store)) as intake, \
                serve(scoring_app(settings, engine=scoring_db.engine, access=keys.store)) as scoring, \
                serve(ranking_app(settings, engine=ranking_db.engine, access=keys.store)) as ranking, \
                serve(notify_app(settings, engine=notify_db.engine, access=keys.store)) as notify:
            headers = bearer(keys.admin)
            finding = f.finding()
            for event in (f.inspection(finding, region=A_COUNTY), f.step("rectification.reported",
                                                                         finding["finding_id"], region=A_COUNTY)):
                r = httpx.post(f"{intake}/v1/events", json=event, headers=headers, timeout=10)
                assert r.status_code == 201, r.text
            r = httpx.post(f"{notify}/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"},
                           headers=headers, timeout=10)
            assert r.status_code == 201, r.text
            yield {"backend": backend, "headers": headers, "endpoint_id": r.json()["id"],
                   "urls": {"intake": intake, "scoring": scoring, "ranking": ranking, "notify": notify},
                   "engines": {"intake": intake_db.engine, "scoring": scoring_db.engine,
                               "ranking": ranking_db.engine, "notify": notify_db.engine, "access": keys.engine}}
    keys.engine.dispose()


def stored(stack) -> dict[str, Any]:
    """Everything the services hold: intake's chain and export through its API, every table's rows."""
    intake, headers = stack["urls"]["intake"], stack["headers"]
    verify = httpx.get(f"{intake}/v1/audit/verify", headers=headers, timeout=30).json()
    export = httpx.get(f"{intake}/v1/events/export", headers=headers, timeout=30).content
    state = {"intake.verify": (verify["ok"], verify["events_checked"], verify["head_hash"]),
             "intake.export": hashlib.sha256(export).hexdigest()}
    for service, engine in stack["engines"].items():
        state.update({f"{service}.{t}": digest for t, digest in _tables(engine).items()})
    return state


def test_bad_input_gets_a_problem_naming_the_field_and_changes_nothing(stack):
    before = stored(stack)
    assert before["intake.verify"][:2] == (True, 2)
    failures, accepted = [], 0
    todo = cases(stack["endpoint_id"])
    # a fresh connection per request: the server may close one after refusing a body it did not read
    with httpx.Client(headers=stack["headers"], timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as c:
        for case in todo:
            kwargs = {k: v for k, v in (("json", case.json), ("content", case.content), ("headers", case.headers))
                      if v is not None}
            if isinstance(case.content, Iterator):
                kwargs["content"] = iter([b"x" * (1024 * 1024)] * (HUGE // 2**20))  # a generator runs once
            try:
                response = c.request(case.method, stack["urls"][case.service] + case.path, **kwargs)
            except httpx.HTTPError as exc:
                failures.append(f"{case.name}: no answer ({exc!r})")
                continue
            accepted += response.is_success and not case.batch_items
            problem = check(case, response)
            if problem:
                failures.append(problem)
    after = stored(stack)
    changed = sorted(k for k in before if before[k] != after.get(k)) + sorted(set(after) - set(before))
    report.record("bad input at every API", stack["backend"], sent=len(todo), lost=len(changed), doubled=accepted,
                  recovery_s=None, note=f"{len(todo) - len(failures)}/{len(todo)} answered as they should")
    assert not changed, f"stored state changed: {changed}"
    assert not failures, f"{len(failures)} of {len(todo)} bad requests were answered wrongly:\n" + "\n".join(failures)
