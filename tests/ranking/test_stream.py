"""The live stream over real HTTP while its key changes: revoked (in another process) or expired,
the stream ends within the key cache's bound (5 s) with a last `event: end` carrying the 401 a new
request gets, and a reconnecting EventSource gets that 401. A key holds at most
`stream_max_per_key` streams open in a process, and every stream gives its place back however it
ends."""

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlmodel import Session

from services.kit.access.keys import Access
from services.kit.broker import free_port
from services.kit.settings import Settings
from services.ranking.app import create_app
from services.ranking.models import StandingHistory
from tests.http_helpers import serve
from tests.waiting import wait_for

MARGIN_S = 1.5  # the poll interval, a cache read and a loaded machine


@pytest.fixture
def ranking(ranking_db, tmp_path, access) -> Iterator[tuple[str, FastAPI]]:
    """Ranking's API over HTTP with its own key store, as in its own process: a revocation made
    through `access.store` reaches it through its cache only."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                        service_token=access.admin, stream_poll_ms=50, stream_max_per_key=2)
    app = create_app(settings, engine=ranking_db.engine)
    with serve(app) as url:
        yield url, app


@contextmanager
def standings_changing(engine: Engine) -> Iterator[None]:
    """A standing change every 0.1 s (what the worker writes), so an open stream keeps delivering."""
    stop = threading.Event()

    def write() -> None:
        total = 50.0
        while not stop.wait(0.1):
            total += 0.1
            with Session(engine) as s:
                s.add(StandingHistory(scope="513400", level="county", league="in_poverty", year=2026,
                                      region_code="513431", rank=1, total=total, grade="好",
                                      at=datetime.now(timezone.utc)))
                s.commit()

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, data) of each SSE message until the server closes the stream."""
    name = "message"
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            yield name, orjson.loads(line[len("data: "):])
        elif not line:
            name = "message"


def open_stream(url: str, token: str):
    return httpx.stream("GET", f"{url}/v1/standings/stream", params={"access_token": token},
                        timeout=httpx.Timeout(10.0, read=10.0))


def ends_after(url: str, token: str, lapse, bound_s: float) -> tuple[list[str], float, dict]:
    """Opens a stream, waits for a standing, calls `lapse()` (which returns when the key lapsed);
    then the names of the events after it, the seconds until the stream ended, and the last data."""
    with open_stream(url, token) as response:
        assert response.status_code == 200
        stream = events(response)
        assert next(stream)[0] == "standing"
        lapsed = lapse()
        names, data = [], {}
        for name, data in stream:  # a change every 0.1 s: this never waits long for the next line
            names.append(name)
            if time.monotonic() > lapsed + bound_s + MARGIN_S:
                break  # still open: failed
        return names, time.monotonic() - lapsed, data


def test_a_key_revoked_while_its_stream_is_open_ends_the_stream_within_5_s(ranking, ranking_db, access):
    ranking_url, app = ranking
    cache_s = app.state.access.cache_s  # how stale a process's view of a key may be (README: 5 s)
    assert cache_s == 5
    token = access.key(["standings:read"], "513400")
    key_id = token.split("_")[1]

    def revoke() -> float:
        access.store.revoke(key_id)  # what DELETE /v1/keys/{id} does in intake's process
        return time.monotonic()

    with standings_changing(ranking_db.engine):
        names, took, last = ends_after(ranking_url, token, revoke, cache_s)
    assert names and names[-1] == "end" and set(names[:-1]) <= {"standing"}, names[-5:]
    assert took <= cache_s + MARGIN_S, took
    assert last["status"] == 401 and last["type"] == "urn:kaohe:problem:unauthenticated"
    assert last["detail"] == "the API key is unknown, revoked or expired"
    again = httpx.get(f"{ranking_url}/v1/standings/stream", params={"access_token": token},
                      headers={"Last-Event-ID": "1"}, timeout=10)  # what the EventSource does next
    assert again.status_code == 401 and again.headers["content-type"] == "application/problem+json"


def test_a_key_expiring_while_its_stream_is_open_ends_the_stream_at_once(ranking, ranking_db, access):
    ranking_url, _ = ranking
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=2)
    token = access.store.create(name="short", scopes=["standings:read"], region="513400", expires_at=expires_at,
                                rate_limit_per_min=10**7)[1]

    def expiry() -> float:
        left = (expires_at - datetime.now(timezone.utc)).total_seconds()
        time.sleep(max(0.0, left))
        return time.monotonic()

    with standings_changing(ranking_db.engine):
        names, took, last = ends_after(ranking_url, token, expiry, 0.0)  # the cached row holds expires_at
    assert names and names[-1] == "end", names[-5:]
    assert took <= MARGIN_S, took
    assert last["status"] == 401
    assert httpx.get(f"{ranking_url}/v1/standings/stream", params={"access_token": token},
                     timeout=10).status_code == 401


def test_an_open_stream_reads_the_key_store_once_per_cache_period_not_per_poll(ranking, ranking_db, access,
                                                                                monkeypatch):
    ranking_url, app = ranking
    token = access.key(["standings:read"], "513400")
    store: Access = app.state.access
    reads = []
    real_get = store.get
    monkeypatch.setattr(store, "get", lambda key_id: reads.append(key_id) or real_get(key_id))
    with standings_changing(ranking_db.engine), open_stream(ranking_url, token) as response:
        stream, started = events(response), time.monotonic()
        delivered = sum(1 for _ in itertools.takewhile(lambda _: time.monotonic() < started + 2, stream))
    # 2 s of 50 ms polls, each checking the key: all but the first answered by the cache (5 s)
    assert delivered >= 10 and len(reads) <= 1, (delivered, reads)


def test_a_key_holds_at_most_stream_max_per_key_streams_open_and_a_closed_one_gives_its_place_back(
        ranking, access):
    ranking_url, app = ranking
    token, other = access.key(["standings:read"], "513400"), access.key(["standings:read"], "513400")
    key_id = token.split("_")[1]
    for _ in range(3):  # refused after its place was taken: given back
        assert httpx.get(f"{ranking_url}/v1/standings/stream", params={"access_token": token, "region": "519999"},
                         timeout=10).status_code == 404
    assert app.state.open_streams.held(key_id) == 0
    with open_stream(ranking_url, token) as first, open_stream(ranking_url, token) as second:
        assert first.status_code == second.status_code == 200
        third = httpx.get(f"{ranking_url}/v1/standings/stream", params={"access_token": token}, timeout=10)
        assert third.status_code == 429 and third.headers["content-type"] == "application/problem+json"
        problem = third.json()
        assert problem["type"] == "urn:kaohe:problem:too-many-streams", problem
        assert problem["detail"] == ("this key has 2 streams open, the most it may hold (2 per API process); "
                                     "close one, or retry in 5 s")
        assert problem["open_streams"] == problem["max_streams"] == 2
        assert third.headers["Retry-After"] == "5"
        assert third.headers["RateLimit-Policy"] and third.headers["RateLimit"]
        # the region is checked before a place is taken: unknown, or outside the key, is a 404 still
        limiter, taken = app.state.rate_limiter, []
        real_take = limiter.take
        limiter.take = lambda key, *rest: taken.append(key) or real_take(key, *rest)
        try:
            for region in ("519999", "510100"):
                refused = httpx.get(f"{ranking_url}/v1/standings/stream",
                                    params={"access_token": token, "region": region}, timeout=10)
                assert refused.status_code == 404, (region, refused.text)
        finally:
            del limiter.take
        assert taken == [key_id, key_id]  # the key checked, and counted, once a request
        with open_stream(ranking_url, other) as another_key:  # the limit is the key's, not everyone's
            assert another_key.status_code == 200
            assert 'kaohe_open_streams{service="ranking"} 3.0' in httpx.get(f"{ranking_url}/metrics").text
        first.close()  # the client goes away: the server sees the disconnect and gives the place back
        wait_for(lambda: app.state.open_streams.held(key_id) == 1, timeout=10, what="the closed stream's place back")
        with open_stream(ranking_url, token) as again:
            assert again.status_code == 200
            assert next(again.iter_lines()) == "retry: 2000"
    wait_for(lambda: app.state.open_streams.total() == 0, timeout=10, what="every place back")


def test_a_stream_ended_by_its_key_being_revoked_gives_its_place_back(ranking, ranking_db, access):
    ranking_url, app = ranking
    token = access.key(["standings:read"], "513400")
    key_id = token.split("_")[1]
    with standings_changing(ranking_db.engine):
        with open_stream(ranking_url, token) as one, open_stream(ranking_url, token) as two:
            # the event iterators kept: one dropped half-read closes its connection (httpcore)
            first, second = events(one), events(two)
            assert (next(first)[0], next(second)[0]) == ("standing", "standing")
            assert app.state.open_streams.held(key_id) == 2
            access.store.revoke(key_id)
            assert [name for name, _ in first][-1] == "end"  # the server ended it: read to its end
            assert [name for name, _ in second][-1] == "end"
            # still connected: given back by the server when the stream ended, not by a disconnect
            wait_for(lambda: app.state.open_streams.held(key_id) == 0, timeout=10,
                     what="the ended streams' places back")


def test_a_client_gone_before_the_first_byte_gives_its_place_back(ranking, access):
    """Starlette never starts the stream's generator when the client is gone while the headers
    are sent: a `finally` in the generator would never run, and the place would stay taken."""
    _, app = ranking
    token = access.key(["standings:read"], "513400")
    sent: list[dict] = []
    requests = iter([{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict:
        return next(requests, {"type": "http.disconnect"})  # the client is gone once the request is read

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            await asyncio.sleep(10)  # the headers still being written when the disconnect is seen

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/v1/standings/stream", "raw_path": b"/v1/standings/stream",
             "root_path": "", "query_string": f"access_token={token}".encode(), "headers": [(b"host", b"test")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert [m["type"] for m in sent] == ["http.response.start"] and sent[0]["status"] == 200  # no byte of the body
    assert app.state.open_streams.total() == 0
