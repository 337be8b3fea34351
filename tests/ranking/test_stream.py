"""The live stream over real HTTP while its key changes: revoked (in another process) or expired,
the stream ends within the key cache's bound (5 s) with a last `event: end` carrying the 401 a new
request gets, and a reconnecting EventSource gets that 401."""

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

MARGIN_S = 1.5  # the poll interval, a cache read and a loaded machine


@pytest.fixture
def ranking(ranking_db, tmp_path, access) -> Iterator[tuple[str, FastAPI]]:
    """Ranking's API over HTTP with its own key store, as in its own process: a revocation made
    through `access.store` reaches it through its cache only."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                        service_token=access.admin, stream_poll_ms=50)
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
