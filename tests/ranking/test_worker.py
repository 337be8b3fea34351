"""The ranking worker and API over a real broker: score messages (as scoring publishes them)
become standings with ties, movement, league moves, history, "as of" answers and a live stream."""

import itertools
import threading
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from sqlmodel import Session

from services.events import topics
from services.intake.regions.service import shipped_regions
from services.kit.settings import Settings
from services.ranking.app import create_app
from services.ranking.models import CurrentScore
from services.ranking.worker import Worker, build_relay
from tests.http_helpers import serve
from tests.kafka_helpers import QUICK_GROUP, headers, read_messages
from tests.waiting import wait_for

pytestmark = pytest.mark.broker
T1 = datetime(2026, 5, 1, 2, 0, tzinfo=timezone.utc)
_ids = itertools.count(1)


class Scores:
    """Publishes score messages the way scoring's relay does (key = region, outbox_id header)."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)

    def send(self, code: str, total: float, *, league: str = "in_poverty", year: int = 2026, grade: str = "好",
             message_id: int | None = None, level: str = "county") -> int:
        message_id = message_id or next(_ids) + 1000
        value = {"region_code": code, "level": level, "league": league if level == "county" else None, "year": year,
                 "total": total, "grade": grade, "gated": False, "components": {}, "previous_total": None,
                 "previous_grade": None, "policy_version": "default-v1", "cause": "test",
                 "as_of": "2026-05-01T00:00:00.000000Z"}
        self.producer.send(topics.SCORING_SCORES, key=code.encode(), value=orjson.dumps(value),
                           headers=[("outbox_id", str(message_id).encode())])
        self.producer.flush()
        return message_id

    def raw(self, value: bytes, headers=None) -> None:
        self.producer.send(topics.SCORING_SCORES, key=b"513431", value=value, headers=headers or [])
        self.producer.flush()


@pytest.fixture
def ranking(ranking_db, tmp_path, access, clock, own_broker):
    """Ranking's worker (+ relay) in threads, its API, and a way to publish score messages."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                        service_token=access.admin, relay_idle_ms=10, intake_url="http://127.0.0.1:9",
                        stream_poll_ms=50, **QUICK_GROUP)
    clock.now = T1
    stop = threading.Event()
    worker = Worker(settings, ranking_db.engine, clock=clock)
    relay = build_relay(settings, ranking_db.engine)
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=relay.run, args=(stop,), daemon=True)]
    for t in threads:
        t.start()
    scores = Scores(own_broker.bootstrap_servers)
    app = create_app(settings, engine=ranking_db.engine)
    with TestClient(app, headers=access.headers) as api:
        try:
            yield api, scores, own_broker, app
        finally:
            stop.set()
            for t in threads:
                t.join(30)
            worker.close()
            relay.close()
            scores.producer.close()



def league(api, region="513400", **params):
    r = api.get("/v1/standings", params={"region": region, "year": 2026, **params})
    assert r.status_code == 200, r.json()
    return [(s["region_code"], s["rank"], s["total"]) for s in r.json()["items"]]


def test_ties_share_a_rank_and_movement_is_recorded(ranking):
    api, scores, _, _ = ranking
    scores.send("513431", 90.0)
    scores.send("513432", 95.0)
    scores.send("513433", 90.0)
    assert wait_for(lambda: len(league(api)) == 3 and league(api)) == [
        ("513432", 1, 95.0), ("513431", 2, 90.0), ("513433", 2, 90.0)]
    scores.send("513431", 96.0)
    assert wait_for(lambda: (x := league(api))[0][0] == "513431" and x) == [
        ("513431", 1, 96.0), ("513432", 2, 95.0), ("513433", 3, 90.0)]
    items = {s["region_code"]: s for s in api.get("/v1/standings", params={"region": "513400", "year": 2026}).json()[
        "items"]}
    assert (items["513431"]["movement"], items["513431"]["previous_rank"]) == (1, 2)
    assert (items["513432"]["movement"], items["513433"]["movement"]) == (-1, -1)
    assert items["513431"]["name"] == "昭觉县"

    placements = api.get("/v1/standings/513431", params={"year": 2026}).json()
    assert {(p["scope"], p["rank"], p["of"]) for p in placements} == {("513400", 1, 3), ("510000", 1, 3)}
    history = api.get("/v1/standings/513431/history", params={"year": 2026}).json()
    ranks = [h["rank"] for h in history if h["scope"] == "513400"]
    assert ranks[-2:] == [2, 1] and history[-1]["previous_rank"] == 2


def test_a_county_that_exits_moves_league(ranking):
    api, scores, broker, _ = ranking
    scores.send("513431", 90.0)
    scores.send("513432", 80.0)
    wait_for(lambda: len(league(api)) == 2)
    scores.send("513432", 80.0, league="exited")
    wait_for(lambda: league(api, league="exited") == [("513432", 1, 80.0)])
    # (a page rendered before the move may be served for up to VERSION_TTL_S more: waited for, not read once)
    wait_for(lambda: league(api) == [("513431", 1, 90.0)], what="the in_poverty league without 513432")
    wait_for(lambda: league(api, region="510000", league="exited") == [("513432", 1, 80.0)],
             what="the province's exited league")
    history = api.get("/v1/standings/513432/history", params={"year": 2026}).json()
    left = [h for h in history if h["league"] == "in_poverty" and h["rank"] is None]
    assert {h["scope"] for h in left} == {"513400", "510000"} and left[0]["previous_rank"] == 2
    # rank changes are published for notifications
    published = read_messages(broker.bootstrap_servers, topics.RANKING_STANDINGS,
                              lambda ms: any(orjson.loads(m.value)["league"] == "exited" for m in ms))
    moved = [orjson.loads(m.value) for m in published if m.key == b"513432"]
    assert {(m["league"], m["scope"], m["rank"]) for m in moved} >= {("exited", "513400", 1),
                                                                     ("in_poverty", "513400", None)}


def test_resent_and_older_copies_are_dropped(ranking):
    api, scores, _, _ = ranking
    scores.send("513431", 80.0, message_id=50)
    wait_for(lambda: league(api) == [("513431", 1, 80.0)])
    scores.send("513431", 10.0, message_id=40)  # an older message arriving late
    scores.send("513431", 80.0, message_id=50)  # a relay's resend
    scores.send("513432", 70.0, message_id=51)  # a marker: everything before it was handled
    wait_for(lambda: len(league(api)) == 2)
    assert league(api) == [("513431", 1, 80.0), ("513432", 2, 70.0)]
    history = api.get("/v1/standings/513431/history", params={"year": 2026}).json()
    assert len([h for h in history if h["scope"] == "513400"]) == 1


def test_poison_messages_are_dead_lettered_and_later_scores_still_ranked(ranking):
    api, scores, broker, _ = ranking
    scores.raw(b"{not json", headers=[("outbox_id", b"1")])
    scores.raw(orjson.dumps({"region_code": "513431", "level": "county", "league": "in_poverty", "year": 2026,
                             "total": 150, "grade": "好"}), headers=[("outbox_id", b"2")])
    scores.raw(orjson.dumps({"region_code": "513431", "level": "county", "league": "in_poverty", "year": 2026,
                             "total": 50, "grade": "好", "as_of": "2026-05-01T00:00:00Z"}))  # no outbox_id
    scores.send("513431", 77.0)
    wait_for(lambda: league(api) == [("513431", 1, 77.0)])
    dead = read_messages(broker.bootstrap_servers, topics.dead_letter(topics.SCORING_SCORES), lambda ms: len(ms) >= 3)
    assert len(dead) == 3 and all(headers(m)["error"] for m in dead)
    assert headers(dead[0])["original_topic"] == topics.SCORING_SCORES


def test_as_of_answers_how_the_standings_were(ranking, clock):
    api, scores, _, _ = ranking
    scores.send("513431", 90.0)
    scores.send("513432", 80.0)
    wait_for(lambda: len(league(api)) == 2)
    clock.now = T1 + timedelta(days=10)
    scores.send("513432", 99.0)
    wait_for(lambda: league(api)[0][0] == "513432")
    before = league(api, as_of=(T1 + timedelta(days=5)).isoformat())
    assert before == [("513431", 1, 90.0), ("513432", 2, 80.0)]
    assert league(api, as_of=(T1 - timedelta(days=1)).isoformat()) == []
    assert league(api, as_of=(T1 + timedelta(days=11)).isoformat()) == league(api)


def test_pagination_walks_a_league_in_order(ranking):
    api, scores, _, _ = ranking
    counties = [r["code"] for r in shipped_regions()["regions"] if r["level"] == "county"][:25]
    for i, code in enumerate(counties):
        scores.send(code, float(60 + (i % 7)))  # ties across page boundaries
    wait_for(lambda: len(league(api, region="510000", limit=100)) == 25)
    seen, cursor = [], None
    while True:
        params = {"region": "510000", "year": 2026, "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/standings", params=params).json()
        seen += [(s["rank"], s["region_code"]) for s in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(set(seen)) == 25
    assert api.get("/v1/standings", params={"region": "510000", "year": 2026, "cursor": "nope"}).status_code == 422


def test_bad_parameters_are_named_problems_and_an_empty_league_is_empty(ranking):
    api, _, _, _ = ranking
    def problem(params, status):
        r = api.get("/v1/standings", params={"year": 2026, **params})
        assert r.status_code == status and r.headers["content-type"].startswith("application/problem+json"), r.text
        return r.json()
    assert problem({"region": "999900"}, 404)
    assert problem({"region": "513431"}, 422)["errors"][0]["field"] == "region"
    assert problem({"region": "513400", "level": "prefecture"}, 422)["errors"][0]["field"] == "level"
    assert problem({"region": "510000", "league": "all"}, 422)["errors"][0]["field"] == "league"
    assert problem({"region": "510000", "league": "rich"}, 422)
    assert problem({"region": "510000", "limit": 101}, 422)
    assert problem({"region": "510000", "as_of": "yesterday"}, 422)
    assert api.get("/v1/standings", params={"region": "513400", "year": 2026, "league": "exited"}).json()["items"] == []
    assert api.get("/v1/standings/999999", params={"year": 2026}).status_code == 404
    assert api.get("/v1/standings/513431", params={"year": 2026}).json() == []


def test_the_stream_sends_standing_changes_as_they_happen(ranking, access):
    """Over real HTTP, with the key as `access_token` (what EventSource sends): a prefecture's key
    gets its own counties' changes and nothing of another prefecture."""
    api, scores, _, app = ranking
    liangshan = access.key(["standings:read"], "513400")
    with serve(app) as url, httpx.stream("GET", f"{url}/v1/standings/stream", params={"access_token": liangshan},
                                         timeout=httpx.Timeout(10.0, read=20.0)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        scores.send("510722", 50.0)  # another prefecture: not in this stream
        scores.send("513431", 88.0)
        event: dict = {}
        seen = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = orjson.loads(line[6:])
                seen.append(event["region_code"])
                if event["region_code"] == "513431":
                    break
        assert event["region_code"] == "513431" and event["rank"] == 1 and event["total"] == 88.0
        assert event["scope"] in ("513400", "510000") and event["name"] == "昭觉县"
        assert not [code for code in seen if code.startswith("5107")], seen
    assert api.get("/v1/standings/stream", params={"region": "999999"}).status_code == 404


def current_score(db, code: str) -> tuple[float, int] | None:
    with Session(db.engine) as s:
        row = s.get(CurrentScore, (code, 2026))
        return (row.total, row.message_id) if row else None


def test_a_worker_started_after_the_broker_lost_its_log_reads_the_new_log_from_its_start(
        ranking_db, tmp_path, access, own_broker):
    """Its stored offset (6 on the county's partition) points into the new, empty-then-refilled log:
    used there, it would skip the new log's head (the highest score message id, at offset 0)."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                        service_token=access.admin, intake_url="http://127.0.0.1:9", **QUICK_GROUP)
    own_broker.partitions = 3  # a restart creates the topics first, as make run's broker does

    def running(until) -> None:
        stop, worker = threading.Event(), Worker(settings, ranking_db.engine)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            wait_for(until, what="the worker's scores", timeout=60)
        finally:
            stop.set()
            thread.join(30)
            worker.close()

    scores = Scores(own_broker.bootstrap_servers)
    try:
        for i in range(6):  # offsets 0-5 of the county's partition
            scores.send("513431", 50.0 + i, message_id=1001 + i)
        running(lambda: current_score(ranking_db, "513431") == (55.0, 1006))
        scores.producer.close()
        own_broker.stop()
        own_broker.start()  # empty
        scores = Scores(own_broker.bootstrap_servers)
        scores.send("513431", 90.0, message_id=3000)  # offset 0 of the new log: the latest score
        for i in range(6):  # offsets 1-6: older messages (as a relay re-sending its backlog out of order)
            scores.send("513431", 60.0 + i, message_id=2001 + i)
        running(lambda: current_score(ranking_db, "513431") == (90.0, 3000))
    finally:
        scores.producer.close()


def test_a_score_sent_again_unchanged_moves_nothing(ranking, ranking_db):
    """What scoring sends after a lost log (every current score again, under a newer outbox id):
    ranking takes the newer id, and makes no history, no standing message, no webhook from it."""
    api, scores, broker, _ = ranking
    scores.send("513431", 80.0, message_id=50)
    scores.send("513432", 70.0, message_id=51)
    wait_for(lambda: len(league(api)) == 2)
    scores.send("513431", 80.0, message_id=60)  # the same score again
    scores.send("513433", 60.0, message_id=61)  # a marker: everything before it was handled
    wait_for(lambda: len(league(api)) == 3)
    assert current_score(ranking_db, "513431") == (80.0, 60)
    history = api.get("/v1/standings/513431/history", params={"year": 2026}).json()
    assert sorted((h["scope"], h["rank"]) for h in history) == [("510000", 1), ("513400", 1)]  # the first only
    published = read_messages(broker.bootstrap_servers, topics.RANKING_STANDINGS,
                              lambda ms: any(m.key == b"513433" for m in ms))
    assert sorted(orjson.loads(m.value)["scope"] for m in published if m.key == b"513431") == ["510000", "513400"]
